package dataplane

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Builders that keep the table tests readable.

func svc(name string, mods ...func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: v1.ServiceSpec{
			Type:      v1.ServiceTypeClusterIP,
			ClusterIP: "172.30.0.1", ClusterIPs: []string{"172.30.0.1"},
			Ports: []v1.ServicePort{{Name: "p80", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func clusterIPs(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = ips[0], ips }
}

func nodePort(port int32) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = port
	}
}

func loadBalancer(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		if s.Spec.Ports[0].NodePort == 0 {
			s.Spec.Ports[0].NodePort = 30080
		}
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
	}
}

func etpLocal(s *v1.Service) { s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal }
func itpLocal(s *v1.Service) {
	s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
}

// Each endpoint is "10.0.0.1" (ready, on node-b) with optional flags after a
// slash: l = on this node (node-a), t = terminating, n = not ready, u = not serving.
func slice(name string, port int32, eps ...string) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{LabelServiceName: "web"}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("p80"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(port)}},
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
				ep.NodeName = ptr.To("node-a")
			case 't':
				term, ready = true, false
			case 'n':
				ready = false
			case 'u':
				serving = false
			}
		}
		ep.Conditions = discovery.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

func node(ips ...string) NodeInfo {
	n := NodeInfo{Name: "node-a", Eligible: true, Zone: "zone-a"}
	for _, ip := range ips {
		n.IPs = append(n.IPs, netip.MustParseAddr(ip))
	}
	return n
}

func cfgWith(mods ...func(*Config)) Config {
	c := DefaultConfig()
	c.NodeName = "node-a"
	c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, m := range mods {
		m(&c)
	}
	return c
}

// describe renders a service state compactly: one line per frontend, by family,
// type and key.
func describe(st *ServiceState) []string {
	if st == nil {
		return nil
	}
	fs := make([]*FrontendState, len(st.Frontends))
	for i := range st.Frontends {
		fs[i] = &st.Frontends[i]
	}
	slices.SortStableFunc(fs, func(a, b *FrontendState) int {
		if c := cmp.Compare(FamilyOf(a.Addr), FamilyOf(b.Addr)); c != 0 {
			return c
		}
		return cmp.Compare(a.Type, b.Type)
	})
	var out []string
	for _, f := range fs {
		line := fmt.Sprintf("%s %s pod=%s host=%s out=%s", f.Type, f.FrontendKey,
			routeString(&f.Pod), routeString(&f.Host), routeString(&f.Outside))
		out = append(out, line)
	}
	return out
}

func frontendByType(t *testing.T, st *ServiceState, ft FrontendType) *FrontendState {
	t.Helper()
	for i := range st.Frontends {
		if st.Frontends[i].Type == ft {
			return &st.Frontends[i]
		}
	}
	t.Fatalf("no %s frontend in %v", ft, describe(st))
	return nil
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
