package iptables

import (
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/test/golden"
)

func eps(addrs ...string) []string { return addrs }

func scenarios() []scenario {
	web := service("ns", "web", "172.30.0.1")
	three := service("ns", "three", "172.30.0.3")
	empty := service("ns", "empty", "172.30.0.4", withNodePort(30004), withLB("1.2.3.4"), withExternalIPs("192.168.99.11"))
	multi := service("ns", "multi", "172.30.0.5", withPorts(
		v1.ServicePort{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30080},
		v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353), NodePort: 30053},
		v1.ServicePort{Name: "assoc", Protocol: v1.ProtocolSCTP, Port: 9999, NodePort: 30099},
	), func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeNodePort })
	npCluster := service("ns", "np-cluster", "172.30.0.6", withNodePort(30006))
	npLocal := service("ns", "np-local", "172.30.0.7", withNodePort(30007), withETPLocal(0))
	npLocalRemote := service("ns", "np-local-remote", "172.30.0.8", withNodePort(30008), withETPLocal(0))
	lbRanges := service("ns", "lb-ranges", "172.30.0.9", withNodePort(30009), withLB("5.6.7.8"),
		withSourceRanges(" 203.0.113.0/25", "198.51.100.0/24"))
	lbRangesNode := service("ns", "lb-ranges-node", "172.30.0.10", withNodePort(30010), withLB("5.6.7.9", "5.6.7.10"),
		withSourceRanges("192.168.0.0/24"), withETPLocal(32010))
	lbAnyRange := service("ns", "lb-any", "172.30.0.11", withNodePort(30011), withLB("5.6.7.11"), withSourceRanges("0.0.0.0/0"))
	lbRangesEmpty := service("ns", "lb-ranges-empty", "172.30.0.12", withNodePort(30012), withLB("5.6.7.12"), withSourceRanges("203.0.113.0/25"))
	extIPs := service("ns", "ext", "172.30.0.13", withExternalIPs("192.168.99.13", "192.168.99.14"))
	extIPsLocal := service("ns", "ext-local", "172.30.0.14", withExternalIPs("192.168.99.15"), withETPLocal(0))
	aff := service("ns", "sticky", "172.30.0.15", withAffinity(300))
	affLocal := service("ns", "sticky-local", "172.30.0.16", withAffinity(10800), withNodePort(30016), withETPLocal(0))
	itp := service("ns", "itp", "172.30.0.17", withITPLocal)
	itpRemote := service("ns", "itp-remote", "172.30.0.18", withITPLocal)
	itpBoth := service("ns", "itp-both", "172.30.0.19", withITPLocal, withNodePort(30019), withETPLocal(0))
	term := service("ns", "term", "172.30.0.20", withNodePort(30020), withETPLocal(0))
	v6 := service("ns", "web6", "fd00:30::1", withNodePort(30080), withLB("2001:db8:1::5"),
		withSourceRanges("2001:db8:ff::/48", "10.0.0.0/8"), withExternalIPs("2001:db8:99::1", "192.168.99.1"))
	v6local := service("ns", "web6-local", "fd00:30::2", withNodePort(30081), withETPLocal(0))
	unnamed := service("ns", "unnamed", "172.30.0.21", withPorts(v1.ServicePort{Protocol: v1.ProtocolTCP, Port: 80}))
	unnamedSlice := endpoints(unnamed, 0, eps("10.180.0.1"), ":TCP:8080")
	unnamedSlice.Ports[0].Name = nil

	return []scenario{{
		name:     "clusterip-one-endpoint",
		services: []*v1.Service{web, unnamed},
		slices:   []*discovery.EndpointSlice{endpoints(web, 8080, eps("10.180.0.1")), unnamedSlice},
	}, {
		name:     "clusterip-three-endpoints",
		services: []*v1.Service{three},
		slices:   []*discovery.EndpointSlice{endpoints(three, 8080, eps("10.180.0.2", "10.180.0.10", "10.180.0.1"))},
	}, {
		name:     "no-endpoints",
		services: []*v1.Service{empty},
	}, {
		name:     "multiport",
		services: []*v1.Service{multi},
		slices: []*discovery.EndpointSlice{endpoints(multi, 0, eps("10.180.0.1", "10.180.0.2/l"),
			"http:TCP:8080", "dns:UDP:5353", "assoc:SCTP:9999")},
	}, {
		name:     "nodeport-policies",
		services: []*v1.Service{npCluster, npLocal, npLocalRemote, term},
		slices: []*discovery.EndpointSlice{
			endpoints(npCluster, 8080, eps("10.180.0.1/l", "10.180.0.2")),
			endpoints(npLocal, 8080, eps("10.180.0.1/l", "10.180.0.2")),
			endpoints(npLocalRemote, 8080, eps("10.180.0.1", "10.180.0.2")),
			// the only local endpoint is terminating: the Local policy falls back to it
			endpoints(term, 8080, eps("10.180.0.1/lt", "10.180.0.2")),
		},
	}, {
		name:     "loadbalancer-source-ranges",
		services: []*v1.Service{lbRanges, lbRangesNode, lbAnyRange, lbRangesEmpty},
		slices: []*discovery.EndpointSlice{
			endpoints(lbRanges, 8080, eps("10.180.0.1")),
			endpoints(lbRangesNode, 8080, eps("10.180.0.2/l", "10.180.0.3")),
			endpoints(lbAnyRange, 8080, eps("10.180.0.4")),
		},
	}, {
		name:     "externalips",
		services: []*v1.Service{extIPs, extIPsLocal},
		slices: []*discovery.EndpointSlice{
			endpoints(extIPs, 8080, eps("10.180.0.1", "10.180.0.2")),
			endpoints(extIPsLocal, 8080, eps("10.180.0.3")),
		},
	}, {
		name:     "affinity",
		services: []*v1.Service{aff, affLocal},
		slices: []*discovery.EndpointSlice{
			endpoints(aff, 8080, eps("10.180.0.1", "10.180.0.2")),
			endpoints(affLocal, 8080, eps("10.180.0.3/l", "10.180.0.4")),
		},
	}, {
		name:     "internal-traffic-policy-local",
		services: []*v1.Service{itp, itpRemote, itpBoth},
		slices: []*discovery.EndpointSlice{
			endpoints(itp, 8080, eps("10.180.0.1/l", "10.180.0.2")),
			endpoints(itpRemote, 8080, eps("10.180.0.3")),
			endpoints(itpBoth, 8080, eps("10.180.0.4")),
		},
	}, {
		name:     "masquerade-all",
		model:    func(c *dataplane.Config) { c.MasqueradeAll = true },
		services: []*v1.Service{web, npLocal},
		slices: []*discovery.EndpointSlice{
			endpoints(web, 8080, eps("10.180.0.1")),
			endpoints(npLocal, 8080, eps("10.180.0.1/l", "10.180.0.2")),
		},
	}, {
		name:     "no-cluster-cidr",
		model:    func(c *dataplane.Config) { c.ClusterCIDRs = nil },
		services: []*v1.Service{web, npLocal},
		slices: []*discovery.EndpointSlice{
			endpoints(web, 8080, eps("10.180.0.1")),
			endpoints(npLocal, 8080, eps("10.180.0.1/l", "10.180.0.2")),
		},
	}, {
		name:     "ipv6",
		family:   dataplane.IPv6,
		services: []*v1.Service{v6, v6local},
		slices: []*discovery.EndpointSlice{
			endpoints(v6, 8080, eps("fd00:10::1", "fd00:10::2/l")),
			endpoints(v6local, 8080, eps("fd00:10::3")),
		},
	}, {
		name:     "localhost-nodeports-off",
		model:    func(c *dataplane.Config) { c.LocalhostNodePorts = false },
		services: []*v1.Service{npCluster},
		slices:   []*discovery.EndpointSlice{endpoints(npCluster, 8080, eps("10.180.0.1"))},
	}, {
		name:    "nodeport-addresses-cidrs",
		nodeIPs: []string{"192.168.0.2", "172.16.0.2", "192.168.1.2"},
		model: func(c *dataplane.Config) {
			c.NodePortAddresses = dataplane.NodePortAddresses{CIDRs: []netip.Prefix{
				netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}}
		},
		services: []*v1.Service{npCluster},
		slices:   []*discovery.EndpointSlice{endpoints(npCluster, 8080, eps("10.180.0.1"))},
	}, {
		name:     "nodeport-addresses-primary",
		nodeIPs:  []string{"192.168.0.2", "192.168.1.2"},
		model:    func(c *dataplane.Config) { c.NodePortAddresses = dataplane.NodePortAddresses{Primary: true} },
		services: []*v1.Service{npCluster},
		slices:   []*discovery.EndpointSlice{endpoints(npCluster, 8080, eps("10.180.0.1"))},
	}, {
		name:     "large-cluster-liberal",
		config:   func(c *Config) { c.LargeCluster, c.ConntrackTCPLiberal, c.MasqueradeBit = true, true, 5 },
		services: []*v1.Service{aff},
		slices:   []*discovery.EndpointSlice{endpoints(aff, 8080, eps("10.180.0.1", "10.180.0.2"))},
	}, kubeProxyOverall()}
}

func TestGolden(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			golden.Check(t, sc.name, restoreText(render(t, sc.state(t, nil), sc.cfg()), nil))
		})
	}
}

func TestBaseJumpsGolden(t *testing.T) {
	var b strings.Builder
	for _, j := range BaseJumps(DefaultConfig(dataplane.IPv4)) {
		b.WriteString("-t " + j.Table + " " + jumpLine(j) + "\n")
	}
	golden.Check(t, "base-jumps", b.String())
}

// Every jump to one of our chains lands on a chain that is rendered in the same
// table: iptables-restore would refuse the whole input otherwise.
func TestJumpTargetsExist(t *testing.T) {
	target := regexp.MustCompile(`-j (` + Prefix + `\S+)`)
	for _, sc := range scenarios() {
		r := render(t, sc.state(t, nil), sc.cfg())
		for tbl, chains := range map[string]Chains{"nat": r.NAT, "filter": r.Filter} {
			for chain, rules := range chains {
				for _, rule := range rules {
					if !strings.HasPrefix(rule, "-A "+chain+" ") {
						t.Errorf("%s: rule %q in chain %s", sc.name, rule, chain)
					}
					for _, m := range target.FindAllStringSubmatch(rule, -1) {
						if _, ok := chains[m[1]]; !ok {
							t.Errorf("%s: %s %q jumps to %s, which is not rendered", sc.name, tbl, rule, m[1])
						}
					}
				}
			}
		}
		for _, j := range BaseJumps(sc.cfg()) {
			c := r.NAT
			if j.Table == "filter" {
				c = r.Filter
			}
			if _, ok := c[j.Target]; !ok {
				t.Errorf("%s: base jump %s -> %s, which TopRules does not render", sc.name, j.Chain, j.Target)
			}
		}
	}
}

func TestChainNames(t *testing.T) {
	for _, sc := range scenarios() {
		r := render(t, sc.state(t, nil), sc.cfg())
		for _, c := range []Chains{r.NAT, r.Filter} {
			for name := range c {
				if len(name) > 28 || !strings.HasPrefix(name, Prefix) {
					t.Errorf("%s: chain name %q: want %s... of at most 28 characters", sc.name, name, Prefix)
				}
			}
		}
	}
	// The same hash as kube-proxy's KUBE-SVC-XPGD46QRK7WJZT7O and KUBE-SEP-SXIVWICOYRO3J4NJ.
	if got := chainsOf("ns1/svc1:p80", "tcp").svc; got != "SWYD-SVC-XPGD46QRK7WJZT7O" {
		t.Errorf("chain of ns1/svc1:p80: %s", got)
	}
	if got := endpointChain("ns1/svc1:p80", "tcp", "10.180.0.1:80"); got != "SWYD-SEP-SXIVWICOYRO3J4NJ" {
		t.Errorf("endpoint chain: %s", got)
	}
}

// Names and rules do not depend on the order services arrived in, nor on map order.
func TestDeterministic(t *testing.T) {
	for _, sc := range scenarios() {
		var reversed []int
		for i := len(sc.services) - 1; i >= 0; i-- {
			reversed = append(reversed, i)
		}
		want := restoreText(render(t, sc.state(t, nil), sc.cfg()), nil)
		for i := range 5 {
			order := reversed
			if i%2 == 0 {
				order = nil
			}
			if got := restoreText(render(t, sc.state(t, order), sc.cfg()), nil); got != want {
				t.Errorf("%s: render %d differs:\n%s", sc.name, i, golden.LineDiff(want, got))
			}
		}
	}
}

// A service's chains are the same whether or not another service exists, even one
// that takes its cluster IP and external IP away: the backend rewrites only the
// chains of the services that changed.
func TestServiceRulesIndependent(t *testing.T) {
	for _, sc := range scenarios() {
		st := sc.state(t, nil)
		cfg := sc.cfg()
		before := map[dataplane.ServiceName]Rules{}
		for n := range st.Services {
			before[n] = ServiceRules(st, n, cfg)
		}
		for _, svc := range sc.services {
			// "a" sorts before "ns": it wins every collision.
			thief := service("a", "thief", svc.Spec.ClusterIP, withExternalIPs(svc.Spec.ExternalIPs...), func(s *v1.Service) {
				s.Spec.Ports = slices.Clone(svc.Spec.Ports)
				for i := range s.Spec.Ports {
					s.Spec.Ports[i].NodePort = 0
				}
			})
			unrelated := service("zz", "other", "172.31.0.1", withNodePort(31999))
			sc2 := sc
			sc2.services = append(slices.Clone(sc.services), thief, unrelated)
			sc2.slices = append(slices.Clone(sc.slices), endpoints(unrelated, 80, eps("10.99.0.2")))
			st2 := sc2.state(t, nil)
			for n, want := range before {
				if got := ServiceRules(st2, n, cfg); !reflect.DeepEqual(got, want) {
					t.Errorf("%s: ServiceRules(%s) changed when %s/%s appeared", sc.name, n, thief.Namespace, svc.Name)
				}
			}
			top := TopRules(st2, cfg)
			name := dataplane.ServiceName{Namespace: svc.Namespace, Name: svc.Name}
			for _, rule := range top.NAT[ChainServices] {
				if strings.Contains(rule, name.String()+":") && strings.Contains(rule, "-d "+svc.Spec.ClusterIP+" ") {
					t.Errorf("%s: the cluster IP %s/%s lost is still dispatched to it: %s", sc.name, name, svc.Spec.ClusterIP, rule)
				}
			}
		}
	}
}

func TestProbability(t *testing.T) {
	for n, want := range map[int]string{1: "1.0000000000", 2: "0.5000000000", 3: "0.3333333333", 7: "0.1428571429", 1000: "0.0010000000", 3000: "0.0003333333"} {
		if got := probability(n); got != want {
			t.Errorf("probability(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestLocalhostNodePortsEnabled(t *testing.T) {
	p := func(s ...string) dataplane.NodePortAddresses {
		var n dataplane.NodePortAddresses
		for _, c := range s {
			n.CIDRs = append(n.CIDRs, netip.MustParsePrefix(c))
		}
		return n
	}
	for _, tc := range []struct {
		family dataplane.Family
		flag   bool
		npa    dataplane.NodePortAddresses
		want   bool
	}{
		{dataplane.IPv4, true, p(), true},
		{dataplane.IPv4, false, p(), false},
		{dataplane.IPv6, true, p(), false},
		{dataplane.IPv4, true, p("192.168.0.0/16"), false},
		{dataplane.IPv4, true, p("192.168.0.0/16", "127.0.0.1/32"), true},
		{dataplane.IPv4, true, p("fd00::/8"), true}, // no IPv4 CIDR: every address, as kube-proxy
		{dataplane.IPv4, true, dataplane.NodePortAddresses{Primary: true}, false},
	} {
		c := Config{Family: tc.family, LocalhostNodePorts: tc.flag, NodePortAddresses: tc.npa}
		if got := c.LocalhostNodePortsEnabled(); got != tc.want {
			t.Errorf("%+v: got %v", tc, got)
		}
	}
}

// BenchmarkFullSync renders what a full sync writes for 10,000 services of 10
// endpoints each; BenchmarkPartialSync what one endpoint change writes.
func BenchmarkFullSync(b *testing.B) {
	st, cfg := bigState(b)
	b.ResetTimer()
	for range b.N {
		TopRules(st, cfg)
		for n := range st.Services {
			ServiceRules(st, n, cfg)
		}
	}
}

func BenchmarkPartialSync(b *testing.B) {
	st, cfg := bigState(b)
	name := dataplane.ServiceName{Namespace: "ns", Name: "svc-5000"}
	b.ResetTimer()
	for range b.N {
		TopRules(st, cfg)
		ServiceRules(st, name, cfg)
	}
}

func bigState(b *testing.B) (*dataplane.State, Config) {
	sc := scenario{}
	st := dataplane.NewState()
	st.Node = sc.node()
	mc := sc.modelConfig()
	updates := map[dataplane.ServiceName]*dataplane.ServiceState{}
	for i := range 10000 {
		ip := netip.AddrFrom4([4]byte{172, 30, byte(i >> 8), byte(i)})
		svc := service("ns", "svc-"+strconv.Itoa(i), ip.String())
		var addrs []string
		for j := range 10 {
			addrs = append(addrs, netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(j + 1)}).String())
		}
		ss := dataplane.ComputeService(svc, []*discovery.EndpointSlice{endpoints(svc, 8080, addrs)}, st.Node, mc)
		updates[ss.Name] = ss
	}
	st.Apply(updates)
	return st, sc.cfg()
}
