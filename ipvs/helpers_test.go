package ipvs

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// Builders of API objects, fed through the real model.

const nodeName = "node-a"

func service(ns, name, clusterIP string, mods ...func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.ServiceSpec{
			Type:      v1.ServiceTypeClusterIP,
			ClusterIP: clusterIP, ClusterIPs: []string{clusterIP},
			Ports: []v1.ServicePort{{Name: "p80", Protocol: v1.ProtocolTCP, Port: 80}},
		},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func withNodePort(port int32) func(*v1.Service) {
	return func(s *v1.Service) {
		if s.Spec.Type == v1.ServiceTypeClusterIP {
			s.Spec.Type = v1.ServiceTypeNodePort
		}
		s.Spec.Ports[0].NodePort = port
	}
}

func withLB(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
	}
}

func withExternalIPs(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.ExternalIPs = ips }
}

func withSourceRanges(r ...string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = r }
}

func withETPLocal(hc int32) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = hc
	}
}

func withITPLocal(s *v1.Service) {
	s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
}

func withAffinity(seconds int32) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &seconds}}
	}
}

func withUDP(s *v1.Service) { s.Spec.Ports[0].Protocol = v1.ProtocolUDP }

// endpoints builds the slice of a service with port p80 (the service's
// protocol) on port. Each endpoint is "ADDR" (ready, on another node) or
// "ADDR/FLAGS": l = on this node, t = terminating (serving, not ready).
func endpoints(svc *v1.Service, port int32, eps ...string) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name + "-1", Labels: map[string]string{discovery.LabelServiceName: svc.Name}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("p80"), Protocol: ptr.To(svc.Spec.Ports[0].Protocol), Port: ptr.To(port)}},
	}
	for _, e := range eps {
		addr, flags, _ := strings.Cut(e, "/")
		if strings.Contains(addr, ":") {
			s.AddressType = discovery.AddressTypeIPv6
		}
		ep := discovery.Endpoint{Addresses: []string{addr}, NodeName: ptr.To("node-b")}
		ready, serving, term := true, true, false
		for _, f := range flags {
			switch f {
			case 'l':
				ep.NodeName = ptr.To(nodeName)
			case 't':
				ready, term = false, true
			}
		}
		ep.Conditions = discovery.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

// nodeIPs are the node's addresses in the tests: on eth0, with 127.0.0.1 on lo.
var nodeIPs = []netip.Addr{netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("2001:db8::2")}

func modelConfig() dataplane.Config {
	c := dataplane.DefaultConfig()
	c.NodeName = nodeName
	c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00:10::/64")}
	return c
}

func testOptions() Options { return Options{Model: modelConfig(), MasqueradeBit: 14} }

// cluster is a model fed service by service, as the tracker would.
type cluster struct {
	mc dataplane.Config
	st *dataplane.State
}

func newCluster(mc dataplane.Config) *cluster {
	st := dataplane.NewState()
	st.Node = dataplane.NodeInfo{Name: nodeName, Eligible: true, IPs: nodeIPs}
	return &cluster{mc: mc, st: st}
}

// set puts a service with its slice (nil slice: no endpoints; nil service:
// gone) and returns the change set.
func (c *cluster) set(ns, name string, svc *v1.Service, sl *discovery.EndpointSlice) *dataplane.ChangeSet {
	var ss *dataplane.ServiceState
	if svc != nil {
		var sls []*discovery.EndpointSlice
		if sl != nil {
			sls = append(sls, sl)
		}
		ss = dataplane.ComputeService(svc, sls, c.st.Node, c.mc)
	}
	return c.st.Apply(map[dataplane.ServiceName]*dataplane.ServiceState{{Namespace: ns, Name: name}: ss})
}

// put is set for a service named in its object.
func (c *cluster) put(svc *v1.Service, eps ...string) *dataplane.ChangeSet {
	var sl *discovery.EndpointSlice
	if len(eps) > 0 {
		sl = endpoints(svc, 8080, eps...)
	}
	return c.set(svc.Namespace, svc.Name, svc, sl)
}

// kernel is a node's kernel in fakes: IPVS, devices, the iptables tables of
// both families, and the records file.
type kernel struct {
	ipvs    *FakeIPVS
	links   *FakeLinks
	rules   map[dataplane.Family]*netfilter.FakeRestorer
	records *MemRecords
}

func newKernel() *kernel {
	return &kernel{
		ipvs:    NewFakeIPVS(),
		links:   NewFakeLinks(map[string][]netip.Addr{"eth0": nodeIPs, "lo": {netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}}),
		rules:   map[dataplane.Family]*netfilter.FakeRestorer{dataplane.IPv4: netfilter.NewFakeRestorer(), dataplane.IPv6: netfilter.NewFakeRestorer()},
		records: &MemRecords{},
	}
}

// backend builds a backend (an agent process) on the kernel.
func (k *kernel) backend(t testing.TB, o Options) *Backend {
	t.Helper()
	cfg := Config{Options: o, IPVS: k.ipvs, Links: k.links, Records: k.records,
		Families:  []dataplane.Family{dataplane.IPv4, dataplane.IPv6},
		Restorers: map[dataplane.Family]netfilter.Restorer{}, Jumpers: map[dataplane.Family]netfilter.Jumper{}}
	for f, r := range k.rules {
		cfg.Restorers[f], cfg.Jumpers[f] = r, netfilter.FakeJumper{R: r}
	}
	b, err := NewBackend(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ourChains lists IPVS mode's chains and their rules in a family's tables,
// plus the rules of the built-in chains that jump to them.
func (k *kernel) ourChains(f dataplane.Family) string {
	var b strings.Builder
	for _, t := range tables {
		chains := k.rules[f].Chains(t)
		for _, name := range slices.Sorted(maps.Keys(chains)) {
			rules := chains[name]
			if strings.HasPrefix(name, Prefix) {
				fmt.Fprintf(&b, "%s %s:\n", t, name)
				for _, r := range rules {
					b.WriteString("  " + r + "\n")
				}
				continue
			}
			for _, r := range rules {
				if strings.Contains(r, Prefix) {
					fmt.Fprintf(&b, "%s %s: %s\n", t, name, r)
				}
			}
		}
	}
	return b.String()
}

func key(s string) dataplane.FrontendKey {
	k, err := parseKey(s)
	if err != nil {
		panic(err)
	}
	return k
}
