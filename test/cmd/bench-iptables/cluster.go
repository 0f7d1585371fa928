package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/test/flow"
)

// The cluster both proxies are fed: one node, the services in one namespace.
const (
	nodeName    = "node-a"
	nodeIP      = "192.168.0.2"
	clusterCIDR = "10.0.0.0/8"
	namespace   = "bench"
	podPort     = 8080
	managedBy   = "bench-iptables.switchyard.dev"
	// The web pod answers on webAddrs addresses from webIP on: the endpoints of
	// the services the changes create. The client pod connects to them.
	webIP    = "10.255.0.1"
	clientIP = "10.255.1.1"
)

// benchCase is the node as a flow case (the launchers' input); no objects.
func benchCase() flow.Case {
	return flow.Case{Name: "bench-iptables", Node: flow.Node{Name: nodeName, IPs: []string{nodeIP}},
		Config: flow.Config{ClusterCIDR: clusterCIDR}}
}

func svcName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// clusterIP of base service i: 172.30.1.0 on (172.30.0.1 is the kubernetes service's).
func clusterIP(i int) string { n := 256 + i; return fmt.Sprintf("172.30.%d.%d", n>>8, n&255) }

// endpointIP j of base service i, unique, below 10.128.0.0.
func endpointIP(i, j, perService int) string {
	n := i*perService + j + 1
	return fmt.Sprintf("10.%d.%d.%d", n>>16, n>>8&255, n&255)
}

// newEndpointIP is the address change k puts in: from 10.128.0.1, never used before.
func newEndpointIP(k int) string { n := k + 1; return fmt.Sprintf("10.128.%d.%d", n>>8&255, n&255) }

// createdName and createdIP are the service change k creates (172.30.200.0 on).
func createdName(k int) string { return fmt.Sprintf("new-%04d", k) }
func createdIP(k int) string   { return fmt.Sprintf("172.30.%d.%d", 200+(k>>8), k&255) }

// webAddr is the web pod's address j (j < endpoints).
func webAddr(j int) string { return fmt.Sprintf("10.255.0.%d", j+1) }

func service(name, ip string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(podPort)}}},
	}
}

// slice is a service's only EndpointSlice; the first endpoint is on this node.
func slice(svc string, addrs []string) *discovery.EndpointSlice {
	sl := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: svc + "-bench", Labels: map[string]string{
			discovery.LabelServiceName: svc, discovery.LabelManagedBy: managedBy}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](podPort)}},
	}
	for j, a := range addrs {
		node := "node-b"
		if j == 0 {
			node = nodeName
		}
		sl.Endpoints = append(sl.Endpoints, discovery.Endpoint{Addresses: []string{a},
			Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To(node)})
	}
	return sl
}

// cluster is what the API server holds: services 0..published-1 with their slices.
type cluster struct {
	cs        kubernetes.Interface
	endpoints int
	published int
}

// setUp publishes the Node (with its InternalIP) and the namespace.
func (c *cluster) setUp(ctx context.Context) error {
	bc := benchCase()
	if err := flow.Publish(ctx, c.cs, bc.ToObjects()); err != nil {
		return err
	}
	_, err := c.cs.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	return err
}

// grow publishes services up to n (each with its slice), with parallel writers.
func (c *cluster) grow(ctx context.Context, n, writers int) error {
	if n <= c.published {
		return nil
	}
	start, t0 := c.published, time.Now()
	next := make(chan int)
	errc := make(chan error, writers)
	var done sync.WaitGroup
	var mu sync.Mutex
	count := 0
	for range writers {
		done.Add(1)
		go func() {
			defer done.Done()
			for i := range next {
				if err := c.createBase(ctx, i); err != nil {
					errc <- err
					return
				}
				mu.Lock()
				if count++; count%1000 == 0 {
					fmt.Fprintf(os.Stderr, "  %d/%d services written (%.0fs)\n", start+count, n, time.Since(t0).Seconds())
				}
				mu.Unlock()
			}
		}()
	}
	var err error
feed:
	for i := start; i < n; i++ {
		select {
		case next <- i:
		case err = <-errc:
			break feed
		}
	}
	close(next)
	done.Wait()
	close(errc)
	for e := range errc {
		err = errors.Join(err, e)
	}
	if err != nil {
		return err
	}
	c.published = n
	fmt.Fprintf(os.Stderr, "wrote services %d..%d with their EndpointSlices in %.1fs\n", start, n-1, time.Since(t0).Seconds())
	return nil
}

func (c *cluster) createBase(ctx context.Context, i int) error {
	if _, err := c.cs.CoreV1().Services(namespace).Create(ctx, service(svcName(i), clusterIP(i)), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating service %s: %w", svcName(i), err)
	}
	if _, err := c.cs.DiscoveryV1().EndpointSlices(namespace).Create(ctx, slice(svcName(i), c.baseAddrs(i)), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the slice of %s: %w", svcName(i), err)
	}
	return nil
}

func (c *cluster) baseAddrs(i int) []string {
	var out []string
	for j := range c.endpoints {
		out = append(out, endpointIP(i, j, c.endpoints))
	}
	return out
}

// ignoreNotFound: undoing what is already gone is fine.
func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
