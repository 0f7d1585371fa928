// Package integration tests Switchyard's parts against a real API server (see
// test/controlplane; the binaries come from `make controlplane`).
package integration

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/test/controlplane"
	"github.com/switchyard/switchyard/watcher"
)

const (
	nodeName = "node-a"
	testNS   = "watcher-it"
	// deadline bounds every wait for the desired state to follow a change.
	deadline = 30 * time.Second
)

// TestWatcherFollowsAPIServer runs watcher.RunKubernetes against a real API server
// and checks that the tracker's desired state follows Service and EndpointSlice
// changes, and that a service owned by another proxy never shows up.
func TestWatcherFollowsAPIServer(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Options{})
	cs := cp.Client()
	ctx := t.Context()

	cfg := dataplane.DefaultConfig()
	cfg.NodeName = nodeName
	tracker := dataplane.NewTracker(cfg, nil)
	wctx, cancel := context.WithCancel(context.Background())
	werr := make(chan error, 1)
	go func() { werr <- watcher.RunKubernetes(wctx, cs, nodeName, tracker, 0) }()
	t.Cleanup(func() {
		cancel()
		if err := <-werr; err != nil {
			t.Errorf("RunKubernetes: %v", err)
		}
	})

	createNode(t, cs)
	mustCreate(t, "namespace", func() error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{})
		return err
	})
	// The other proxy's service comes first, so by the time ours shows up its
	// events would have arrived too, had they not been filtered.
	other := createService(t, cs, "other", map[string]string{"service.kubernetes.io/service-proxy-name": "other"})
	createSlice(t, cs, "other", "other-1", map[string]string{"service.kubernetes.io/service-proxy-name": "other"}, "10.0.9.1")
	web := createService(t, cs, "web", nil)
	slice := createSlice(t, cs, "web", "web-1", nil, "10.0.0.1")

	waitFor(t, "the tracker to sync", func() (bool, string) { return tracker.HasSynced(), "not synced" })

	st := dataplane.NewState()
	otherName := dataplane.ServiceName{Namespace: testNS, Name: "other"}
	otherKey := frontendKey(t, other)
	webKey := frontendKey(t, web)
	// follow takes the tracker's changes into st until want holds. The other
	// proxy's service must never appear on the way.
	follow := func(what string, want func() (bool, string)) {
		t.Helper()
		waitFor(t, what, func() (bool, string) {
			ch := tracker.Take()
			st.Apply(ch.Services)
			st.Node = ch.Node
			if _, ok := st.Services[otherName]; ok {
				t.Fatalf("service %s, owned by another proxy, reached the desired state", otherName)
			}
			if fs, ok := st.Frontends[otherKey]; ok {
				t.Fatalf("frontend %s of another proxy's service is in the desired state: %+v", otherKey, fs)
			}
			return want()
		})
	}
	backendsAre := func(key dataplane.FrontendKey, want ...string) func() (bool, string) {
		return func() (bool, string) {
			fs, ok := st.Frontends[key]
			if !ok {
				return false, fmt.Sprintf("no frontend %s; frontends: %s", key, frontends(st))
			}
			if fs.Service.ServiceName != (dataplane.ServiceName{Namespace: testNS, Name: "web"}) || fs.Type != dataplane.ClusterIP {
				return false, fmt.Sprintf("frontend %s belongs to %s (%s)", key, fs.Service, fs.Type)
			}
			got := backends(fs.Pod)
			return slices.Equal(got, want) && fs.Pod.Verdict == dataplane.Forward,
				fmt.Sprintf("frontend %s: %s %v", key, fs.Pod.Verdict, got)
		}
	}

	follow("the ClusterIP frontend with one endpoint", backendsAre(webKey, "10.0.0.1:8080"))
	if want := []netip.Addr{netip.MustParseAddr("192.168.0.2")}; !slices.Equal(st.Node.IPs, want) {
		t.Errorf("desired state's node addresses are %v, want %v", st.Node.IPs, want)
	}

	// A second endpoint.
	slice.Endpoints = append(slice.Endpoints, discovery.Endpoint{
		Addresses: []string{"10.0.0.2"}, Conditions: discovery.EndpointConditions{Ready: ptr.To(true)},
	})
	if _, err := cs.DiscoveryV1().EndpointSlices(testNS).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	follow("the second endpoint", backendsAre(webKey, "10.0.0.1:8080", "10.0.0.2:8080"))

	// The service goes: so does its frontend (its slice stays, as no controller
	// garbage-collects it here).
	if err := cs.CoreV1().Services(testNS).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	follow("the frontend to go", func() (bool, string) {
		_, ok := st.Frontends[webKey]
		return !ok, fmt.Sprintf("frontends: %s", frontends(st))
	})
	// default/kubernetes may be there (without endpoints: no reconciler runs).
	for _, fs := range st.Frontends {
		if fs.Service.Namespace == testNS {
			t.Errorf("frontend left: %s", frontends(st))
			break
		}
	}
}

func createNode(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := t.Context()
	n, err := cs.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "192.168.0.2"}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createService(t *testing.T, cs kubernetes.Interface, name string, labels map[string]string) *v1.Service {
	t.Helper()
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, Labels: labels},
		Spec: v1.ServiceSpec{
			Type:  v1.ServiceTypeClusterIP,
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	got, err := cs.CoreV1().Services(testNS).Create(t.Context(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func createSlice(t *testing.T, cs kubernetes.Interface, svc, name string, labels map[string]string, addrs ...string) *discovery.EndpointSlice {
	t.Helper()
	l := map[string]string{discovery.LabelServiceName: svc, discovery.LabelManagedBy: "switchyard-test"}
	for k, v := range labels {
		l[k] = v
	}
	s := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: testNS, Labels: l},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](8080)}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{
			Addresses: []string{a}, Conditions: discovery.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	got, err := cs.DiscoveryV1().EndpointSlices(testNS).Create(t.Context(), s, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func mustCreate(t *testing.T, what string, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatalf("creating the %s: %v", what, err)
	}
}

func frontendKey(t *testing.T, svc *v1.Service) dataplane.FrontendKey {
	t.Helper()
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		t.Fatalf("service %s has no ClusterIP: %v", svc.Name, err)
	}
	return dataplane.FrontendKey{Addr: ip, Port: uint16(svc.Spec.Ports[0].Port), Protocol: dataplane.TCP}
}

// waitFor polls cond until it holds or the deadline passes; the polling interval
// is not an assertion.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("waited %s for %s; last: %s", deadline, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func backends(r dataplane.Route) []string {
	var out []string
	for _, b := range r.Backends {
		out = append(out, b.AddrPort().String())
	}
	slices.Sort(out)
	return out
}

func frontends(st *dataplane.State) string {
	var out []string
	for _, fs := range st.SortedFrontends() {
		out = append(out, fmt.Sprintf("%s=%s(%s %v)", fs.FrontendKey, fs.Service, fs.Pod.Verdict, backends(fs.Pod)))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}
