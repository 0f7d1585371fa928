package iptables

import (
	"fmt"
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

func withPorts(ports ...v1.ServicePort) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.Ports = ports }
}

// endpoints builds the slice of a service. Each endpoint is "ADDR" (ready, on
// another node) or "ADDR/FLAGS": l = on this node, t = terminating (serving, not
// ready), n = not ready. ports are "name:proto:number"; none means p80:TCP:port.
func endpoints(svc *v1.Service, port int32, eps []string, ports ...string) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name + "-1", Labels: map[string]string{discovery.LabelServiceName: svc.Name}},
		AddressType: discovery.AddressTypeIPv4,
	}
	if len(ports) == 0 {
		ports = []string{fmt.Sprintf("p80:TCP:%d", port)}
	}
	for _, p := range ports {
		var name, proto string
		var num int32
		parts := strings.Split(p, ":")
		name, proto = parts[0], parts[1]
		fmt.Sscan(parts[2], &num)
		s.Ports = append(s.Ports, discovery.EndpointPort{Name: ptr.To(name), Protocol: ptr.To(v1.Protocol(proto)), Port: ptr.To(num)})
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
			case 'n':
				ready = false
			}
		}
		ep.Conditions = discovery.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

// scenario is a node, the model's configuration and the objects it sees.
type scenario struct {
	name     string
	family   dataplane.Family
	nodeIPs  []string
	model    func(*dataplane.Config)
	config   func(*Config) // after NewConfig
	services []*v1.Service
	slices   []*discovery.EndpointSlice
}

func (sc scenario) modelConfig() dataplane.Config {
	c := dataplane.DefaultConfig()
	c.NodeName = nodeName
	c.NodePortRange = dataplane.PortRange{} // upstream's tests use NodePorts like 3001
	c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00:10::/64")}
	if sc.model != nil {
		sc.model(&c)
	}
	return c
}

func (sc scenario) node() dataplane.NodeInfo {
	n := dataplane.NodeInfo{Name: nodeName, Eligible: true}
	ips := sc.nodeIPs
	if ips == nil {
		ips = []string{"192.168.0.2", "2001:db8::2"}
	}
	for _, ip := range ips {
		n.IPs = append(n.IPs, netip.MustParseAddr(ip))
	}
	return n
}

func (sc scenario) cfg() Config {
	f := sc.family
	if f == 0 {
		f = dataplane.IPv4
	}
	c := NewConfig(f, sc.modelConfig())
	if sc.config != nil {
		sc.config(&c)
	}
	return c
}

// state computes the desired state; order says in which order services are
// applied (one Apply per service, as separate syncs would).
func (sc scenario) state(t testing.TB, order []int) *dataplane.State {
	t.Helper()
	st := dataplane.NewState()
	st.Node = sc.node()
	mc := sc.modelConfig()
	if order == nil {
		for i := range sc.services {
			order = append(order, i)
		}
	}
	for _, i := range order {
		svc := sc.services[i]
		var sl []*discovery.EndpointSlice
		for _, s := range sc.slices {
			if s.Namespace == svc.Namespace && s.Labels[discovery.LabelServiceName] == svc.Name {
				sl = append(sl, s)
			}
		}
		ss := dataplane.ComputeService(svc, sl, st.Node, mc)
		if ss == nil {
			t.Fatalf("the model skips %s/%s", svc.Namespace, svc.Name)
		}
		st.Apply(map[dataplane.ServiceName]*dataplane.ServiceState{ss.Name: ss})
	}
	return st
}

// render renders everything a full sync writes: TopRules and every service's rules,
// merged per table; a chain rendered twice is an error.
func render(t testing.TB, st *dataplane.State, cfg Config) Rules {
	t.Helper()
	all := Rules{NAT: Chains{}, Filter: Chains{}}
	merge := func(r Rules, from string) {
		for _, tbl := range []struct{ dst, src Chains }{{all.NAT, r.NAT}, {all.Filter, r.Filter}} {
			for name, rules := range tbl.src {
				if _, dup := tbl.dst[name]; dup {
					t.Errorf("%s renders chain %s that is already rendered", from, name)
				}
				tbl.dst[name] = rules
			}
		}
	}
	merge(TopRules(st, cfg), "TopRules")
	names := make([]dataplane.ServiceName, 0, len(st.Services))
	for n := range st.Services {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b dataplane.ServiceName) int { return strings.Compare(a.String(), b.String()) })
	for _, n := range names {
		merge(ServiceRules(st, n, cfg), "ServiceRules("+n.String()+")")
	}
	return all
}

// restoreText is the iptables-restore input for the rules, the top chains first
// (kube-proxy's order), then the service chains by name; jumps are appended to the
// built-in chains they belong to.
func restoreText(r Rules, jumps []netfilter.Jump) string {
	var b strings.Builder
	for _, tbl := range []struct {
		name   string
		chains Chains
	}{{"filter", r.Filter}, {"nat", r.NAT}} {
		fmt.Fprintf(&b, "*%s\n", tbl.name)
		names := chainOrder(tbl.chains)
		for _, n := range names {
			fmt.Fprintf(&b, ":%s - [0:0]\n", n)
		}
		for _, n := range names {
			for _, rule := range tbl.chains[n] {
				b.WriteString(rule + "\n")
			}
		}
		for _, j := range jumps {
			if j.Table == tbl.name {
				b.WriteString(jumpLine(j) + "\n")
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

func chainOrder(c Chains) []string {
	var top, svc []string
	for n := range c {
		if IsServiceChain(n) {
			svc = append(svc, n)
		} else {
			top = append(top, n)
		}
	}
	slices.Sort(top)
	slices.Sort(svc)
	return append(top, svc...)
}

// jumpLine is a Jump as an iptables-restore line.
func jumpLine(j netfilter.Jump) string {
	spec := j.RuleSpec()
	for i, s := range spec {
		if strings.Contains(s, " ") {
			spec[i] = `"` + s + `"`
		}
	}
	return "-A " + j.Chain + " " + strings.Join(spec, " ")
}
