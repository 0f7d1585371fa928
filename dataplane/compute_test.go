package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

type computeCase struct {
	name   string
	svc    *v1.Service
	slices []*discovery.EndpointSlice
	node   NodeInfo
	cfg    Config
	want   []string // describe() lines; nil: the service is skipped
	// problems are the reasons of the problems expected, in order.
	problems []string
}

func runComputeCases(t *testing.T, cases []computeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.node
			if n.Name == "" {
				n = node("192.168.0.2")
			}
			c := tc.cfg
			if c.NodeName == "" {
				c = cfgWith()
			}
			st := ComputeService(tc.svc, tc.slices, n, c)
			got := describe(st)
			if !slices.Equal(got, tc.want) {
				t.Errorf("frontends:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(tc.want, "\n      "))
			}
			var reasons []string
			if st != nil {
				for _, p := range st.Problems {
					reasons = append(reasons, p.Reason)
				}
			}
			if !slices.Equal(reasons, tc.problems) {
				t.Errorf("problems: got %v, want %v (%+v)", reasons, tc.problems, st)
			}
		})
	}
}

const (
	twoEPs     = "10.1.0.1:8080,10.1.0.2:8080"
	twoEPsMasq = twoEPs + " +masq"
)

func TestEndpointSelection(t *testing.T) {
	udp := svc("web", func(s *v1.Service) { s.Spec.Ports[0].Protocol = v1.ProtocolUDP })
	otherName := slice("web-1", 8080, "10.1.0.1")
	otherName.Ports[0].Name = ptr.To("other")
	noPort := slice("web-1", 8080, "10.1.0.1")
	noPort.Ports[0].Port = nil
	unnamed := svc("web", func(s *v1.Service) { s.Spec.Ports[0].Name = "" })
	unnamedSlice := slice("web-1", 8080, "10.1.0.1")
	unnamedSlice.Ports[0].Name = nil
	nilConditions := slice("web-1", 8080, "10.1.0.1")
	nilConditions.Endpoints[0].Conditions = discovery.EndpointConditions{}
	runComputeCases(t, []computeCase{{
		name:   "ready endpoints; the endpoint port is the DNAT target, not targetPort",
		svc:    svc("web"),
		slices: []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.2", "10.1.0.1")},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=" + twoEPs + " host=" + twoEPsMasq + " out=" + twoEPsMasq},
	}, {
		name:   "slice ports match by name",
		svc:    svc("web"),
		slices: []*discovery.EndpointSlice{otherName},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=REJECT host=REJECT out=REJECT"},
	}, {
		name:   "slice ports match by protocol",
		svc:    udp,
		slices: []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.1")},
		want:   []string{"ClusterIP 172.30.0.1:80/UDP pod=REJECT host=REJECT out=REJECT"},
	}, {
		name:   "unnamed port matches an unnamed slice port",
		svc:    unnamed,
		slices: []*discovery.EndpointSlice{unnamedSlice},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080 host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"},
	}, {
		name:   "a slice port without a number is ignored",
		svc:    svc("web"),
		slices: []*discovery.EndpointSlice{noPort},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=REJECT host=REJECT out=REJECT"},
	}, {
		name:   "missing conditions mean ready",
		svc:    svc("web"),
		slices: []*discovery.EndpointSlice{nilConditions},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080 host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"},
	}, {
		name: "endpoints are deduplicated across slices, a local copy wins",
		svc:  svc("web"),
		slices: []*discovery.EndpointSlice{
			slice("web-1", 8080, "10.1.0.1", "10.1.0.2"), slice("web-2", 8080, "10.1.0.2/l", "10.1.0.1")},
		want: []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080,10.1.0.2:8080(L) host=10.1.0.1:8080,10.1.0.2:8080(L) +masq out=10.1.0.1:8080,10.1.0.2:8080(L) +masq"},
	}, {
		name:   "not-ready endpoints are not used while ready ones exist",
		svc:    svc("web"),
		slices: []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.1", "10.1.0.2/t", "10.1.0.3/n")},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080 host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"},
	}, {
		name:   "serving terminating endpoints are the fallback when none is ready",
		svc:    svc("web"),
		slices: []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.2/t", "10.1.0.3/n", "10.1.0.4/tu")},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.2:8080(T) host=10.1.0.2:8080(T) +masq out=10.1.0.2:8080(T) +masq"},
	}, {
		name:   "endpoints that are not serving are never used",
		svc:    svc("web"),
		slices: []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.4/tu", "10.1.0.3/n")},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=REJECT host=REJECT out=REJECT"},
	}, {
		name: "no endpoints at all: REJECT everywhere",
		svc:  svc("web", nodePort(30080)),
		want: []string{
			"ClusterIP 172.30.0.1:80/TCP pod=REJECT host=REJECT out=REJECT",
			"NodePort 127.0.0.1:30080/TCP pod=REJECT host=REJECT out=REJECT",
			"NodePort 192.168.0.2:30080/TCP pod=REJECT host=REJECT out=REJECT"},
	}})
}

func TestTrafficPolicies(t *testing.T) {
	mixed := []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.1/l", "10.1.0.2")}
	remoteOnly := []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.1", "10.1.0.2")}
	localTerminating := []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.1/lt", "10.1.0.2")}
	const all = "10.1.0.1:8080(L),10.1.0.2:8080"
	runComputeCases(t, []computeCase{{
		name:   "internalTrafficPolicy Local narrows ClusterIP traffic to local endpoints, masqueraded from off the cluster",
		svc:    svc("web", itpLocal),
		slices: mixed,
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080(L) host=10.1.0.1:8080(L) +masq out=10.1.0.1:8080(L) +masq"},
	}, {
		name:   "internalTrafficPolicy Local with endpoints only elsewhere: DROP",
		svc:    svc("web", itpLocal),
		slices: remoteOnly,
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=DROP host=DROP out=DROP"},
	}, {
		name:   "internalTrafficPolicy Local falls back to local serving terminating endpoints",
		svc:    svc("web", itpLocal),
		slices: localTerminating,
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080(LT) host=10.1.0.1:8080(LT) +masq out=10.1.0.1:8080(LT) +masq"},
	}, {
		name:   "externalTrafficPolicy Cluster: everyone reaches all endpoints, masqueraded",
		svc:    svc("web", nodePort(30080)),
		slices: mixed,
		cfg:    cfgWith(func(c *Config) { c.LocalhostNodePorts = false }),
		want: []string{
			"ClusterIP 172.30.0.1:80/TCP pod=" + all + " host=" + all + " +masq out=" + all + " +masq",
			"NodePort 192.168.0.2:30080/TCP pod=" + all + " +masq host=" + all + " +masq out=" + all + " +masq"},
	}, {
		name:   "externalTrafficPolicy Local: outside reaches local endpoints and keeps its address; pods and the node reach all",
		svc:    svc("web", nodePort(30080), etpLocal),
		slices: mixed,
		cfg:    cfgWith(func(c *Config) { c.LocalhostNodePorts = false }),
		want: []string{
			"ClusterIP 172.30.0.1:80/TCP pod=" + all + " host=" + all + " +masq out=" + all + " +masq",
			"NodePort 192.168.0.2:30080/TCP pod=" + all + " host=" + all + " +masq out=10.1.0.1:8080(L)"},
	}, {
		name:   "externalTrafficPolicy Local with endpoints only elsewhere: outside traffic is dropped",
		svc:    svc("web", nodePort(30080), etpLocal),
		slices: remoteOnly,
		cfg:    cfgWith(func(c *Config) { c.LocalhostNodePorts = false }),
		want: []string{
			"ClusterIP 172.30.0.1:80/TCP pod=" + twoEPs + " host=" + twoEPsMasq + " out=" + twoEPsMasq,
			"NodePort 192.168.0.2:30080/TCP pod=" + twoEPs + " host=" + twoEPsMasq + " out=DROP"},
	}, {
		name:   "externalTrafficPolicy Local falls back to local terminating endpoints for outside traffic",
		svc:    svc("web", nodePort(30080), etpLocal),
		slices: localTerminating,
		cfg:    cfgWith(func(c *Config) { c.LocalhostNodePorts = false }),
		want: []string{
			"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.2:8080 host=10.1.0.2:8080 +masq out=10.1.0.2:8080 +masq",
			"NodePort 192.168.0.2:30080/TCP pod=10.1.0.2:8080 host=10.1.0.2:8080 +masq out=10.1.0.1:8080(LT)"},
	}, {
		name:   "externalTrafficPolicy Local without a cluster CIDR: pods look like outside clients",
		svc:    svc("web", nodePort(30080), etpLocal),
		slices: mixed,
		cfg:    cfgWith(func(c *Config) { c.LocalhostNodePorts, c.ClusterCIDRs = false, nil }),
		want: []string{
			"ClusterIP 172.30.0.1:80/TCP pod=" + all + " host=" + all + " out=" + all,
			"NodePort 192.168.0.2:30080/TCP pod=10.1.0.1:8080(L) host=" + all + " +masq out=10.1.0.1:8080(L)"},
	}, {
		name:   "both policies Local: ClusterIP local only, external frontends keep the short circuit",
		svc:    svc("web", nodePort(30080), etpLocal, itpLocal),
		slices: remoteOnly,
		cfg:    cfgWith(func(c *Config) { c.LocalhostNodePorts = false }),
		want: []string{
			"ClusterIP 172.30.0.1:80/TCP pod=DROP host=DROP out=DROP",
			"NodePort 192.168.0.2:30080/TCP pod=" + twoEPs + " host=" + twoEPsMasq + " out=DROP"},
	}, {
		name:   "masqueradeAll masquerades every ClusterIP connection",
		svc:    svc("web"),
		slices: remoteOnly,
		cfg:    cfgWith(func(c *Config) { c.MasqueradeAll = true }),
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=" + twoEPsMasq + " host=" + twoEPsMasq + " out=" + twoEPsMasq},
	}, {
		name:   "without a cluster CIDR ClusterIP traffic is not masqueraded",
		svc:    svc("web"),
		slices: remoteOnly,
		cfg:    cfgWith(func(c *Config) { c.ClusterCIDRs = nil }),
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=" + twoEPs + " host=" + twoEPs + " out=" + twoEPs},
	}, {
		name: "externalTrafficPolicy is ignored for a plain ClusterIP service",
		svc: svc("web", etpLocal, func(s *v1.Service) {
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		}),
		slices: remoteOnly,
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=" + twoEPs + " host=" + twoEPsMasq + " out=" + twoEPsMasq},
	}})
}

func TestTopologyHints(t *testing.T) {
	hinted := func(zones ...string) *discovery.EndpointSlice {
		s := slice("web-1", 8080, "10.1.0.1", "10.1.0.2", "10.1.0.3")
		for i, z := range zones {
			if z != "" {
				s.Endpoints[i].Hints = &discovery.EndpointHints{ForZones: []discovery.ForZone{{Name: z}}}
			}
		}
		return s
	}
	nodeHinted := hinted("zone-a", "zone-b", "zone-a")
	nodeHinted.Endpoints[0].Hints.ForNodes = []discovery.ForNode{{Name: "node-x"}}
	nodeHinted.Endpoints[1].Hints.ForNodes = []discovery.ForNode{{Name: "node-a"}}
	nodeHinted.Endpoints[2].Hints.ForNodes = []discovery.ForNode{{Name: "node-x"}}
	const three = "10.1.0.1:8080,10.1.0.2:8080,10.1.0.3:8080"
	runComputeCases(t, []computeCase{{
		name:   "zone hints narrow cluster endpoints to this node's zone",
		svc:    svc("web"),
		slices: []*discovery.EndpointSlice{hinted("zone-a", "zone-b", "zone-a")},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080,10.1.0.3:8080 host=10.1.0.1:8080,10.1.0.3:8080 +masq out=10.1.0.1:8080,10.1.0.3:8080 +masq"},
	}, {
		name:   "an endpoint without a hint disables topology",
		svc:    svc("web"),
		slices: []*discovery.EndpointSlice{hinted("zone-a", "", "zone-a")},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=" + three + " host=" + three + " +masq out=" + three + " +masq"},
	}, {
		name:   "no endpoint hinted for this zone disables topology",
		svc:    svc("web"),
		slices: []*discovery.EndpointSlice{hinted("zone-b", "zone-c", "zone-b")},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=" + three + " host=" + three + " +masq out=" + three + " +masq"},
	}, {
		name:   "node hints (PreferSameNode) win over zone hints",
		svc:    svc("web"),
		slices: []*discovery.EndpointSlice{nodeHinted},
		want:   []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.2:8080 host=10.1.0.2:8080 +masq out=10.1.0.2:8080 +masq"},
	}, {
		name: "hints do not narrow Local policy endpoints",
		svc:  svc("web", itpLocal),
		slices: []*discovery.EndpointSlice{func() *discovery.EndpointSlice {
			s := hinted("zone-b", "zone-b")
			s.Endpoints[0].NodeName = ptr.To("node-a")
			return s
		}()},
		want: []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080(L) host=10.1.0.1:8080(L) +masq out=10.1.0.1:8080(L) +masq"},
	}})
}

func TestSkippedServices(t *testing.T) {
	eps := []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.1")}
	runComputeCases(t, []computeCase{
		{name: "headless", svc: svc("web", clusterIPs("None")), slices: eps},
		{name: "ExternalName", svc: svc("web", func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeExternalName }), slices: eps},
		{name: "another proxy's service", svc: svc("web", func(s *v1.Service) {
			s.Labels = map[string]string{labelServiceProxyName: "other"}
		}), slices: eps},
		{name: "an IPv6 service on an IPv4 node", svc: svc("web", clusterIPs("fd00::1")), slices: eps, want: nil},
		{
			name: "load balancer ingress with ipMode Proxy is not a frontend",
			svc: svc("web", loadBalancer("203.0.113.7", "203.0.113.8"), func(s *v1.Service) {
				s.Status.LoadBalancer.Ingress[1].IPMode = ptr.To(v1.LoadBalancerIPModeProxy)
			}),
			slices: eps,
			cfg:    cfgWith(func(c *Config) { c.LocalhostNodePorts = false }),
			want: []string{
				"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080 host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq",
				"NodePort 192.168.0.2:30080/TCP pod=10.1.0.1:8080 +masq host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq",
				"LoadBalancer 203.0.113.7:80/TCP pod=10.1.0.1:8080 +masq host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"},
		},
		{
			name: "slices of another proxy are ignored",
			svc:  svc("web"),
			slices: []*discovery.EndpointSlice{func() *discovery.EndpointSlice {
				s := slice("web-1", 8080, "10.1.0.1")
				s.Labels[labelServiceProxyName] = "x"
				return s
			}()},
			want: []string{"ClusterIP 172.30.0.1:80/TCP pod=REJECT host=REJECT out=REJECT"},
		},
	})
}

func TestNodePortAddressesAndRange(t *testing.T) {
	eps := []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.1")}
	twoIPs := node("192.168.0.2", "192.168.1.2")
	np := func(ip string) string {
		return "NodePort " + ip + ":30080/TCP pod=10.1.0.1:8080 +masq host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"
	}
	cip := "ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080 host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"
	runComputeCases(t, []computeCase{{
		name: "all node addresses and 127.0.0.1 by default",
		svc:  svc("web", nodePort(30080)), slices: eps, node: twoIPs,
		want: []string{cip, np("127.0.0.1"), np("192.168.0.2"), np("192.168.1.2")},
	}, {
		name: "--nodeport-addresses CIDRs select node addresses; no localhost outside them",
		svc:  svc("web", nodePort(30080)), slices: eps, node: twoIPs,
		cfg:  cfgWith(func(c *Config) { c.NodePortAddresses, _ = ParseNodePortAddresses([]string{"192.168.1.0/24"}) }),
		want: []string{cip, np("192.168.1.2")},
	}, {
		name: "a CIDR that includes loopback keeps localhost NodePorts",
		svc:  svc("web", nodePort(30080)), slices: eps, node: twoIPs,
		cfg: cfgWith(func(c *Config) {
			c.NodePortAddresses, _ = ParseNodePortAddresses([]string{"192.168.1.0/24", "127.0.0.0/8"})
		}),
		want: []string{cip, np("127.0.0.1"), np("192.168.1.2")},
	}, {
		name: "primary selects the first address of the family",
		svc:  svc("web", nodePort(30080)), slices: eps, node: twoIPs,
		cfg:  cfgWith(func(c *Config) { c.NodePortAddresses, _ = ParseNodePortAddresses([]string{"primary"}) }),
		want: []string{cip, np("192.168.0.2")},
	}, {
		name: "--localhost-nodeports=false",
		svc:  svc("web", nodePort(30080)), slices: eps,
		cfg:  cfgWith(func(c *Config) { c.LocalhostNodePorts = false }),
		want: []string{cip, np("192.168.0.2")},
	}, {
		name: "a nodePort outside --node-port-range is not programmed; the rest of the service is",
		svc:  svc("web", nodePort(40000)), slices: eps,
		want:     []string{cip},
		problems: []string{"NodePortOutOfRange"},
	}, {
		name: "a custom --node-port-range",
		svc:  svc("web", nodePort(40000)), slices: eps,
		cfg: cfgWith(func(c *Config) {
			c.LocalhostNodePorts = false
			c.NodePortRange, _ = ParsePortRange("40000-40100")
		}),
		want: []string{cip, "NodePort 192.168.0.2:40000/TCP pod=10.1.0.1:8080 +masq host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"},
	}})
}

func TestExternalFrontendsAndOptions(t *testing.T) {
	eps := []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.1")}
	const r = "pod=10.1.0.1:8080 +masq host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"
	cip := "ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080 host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"
	noLocalhost := cfgWith(func(c *Config) { c.LocalhostNodePorts = false })
	runComputeCases(t, []computeCase{{
		name: "externalIPs become frontends on the service port; invalid ones are reported",
		svc: svc("web", func(s *v1.Service) {
			s.Spec.ExternalIPs = []string{"198.51.100.9", "not-an-ip", "2001:db8::9"}
		}),
		slices:   eps,
		want:     []string{cip, "ExternalIP 198.51.100.9:80/TCP " + r},
		problems: []string{"InvalidExternalIP"},
	}, {
		name:   "load balancer IPs",
		svc:    svc("web", loadBalancer("203.0.113.7")),
		slices: eps, cfg: noLocalhost,
		want: []string{cip, "NodePort 192.168.0.2:30080/TCP " + r, "LoadBalancer 203.0.113.7:80/TCP " + r},
	}})

	t.Run("source ranges are trimmed, filtered by family, bad ones reported", func(t *testing.T) {
		s := svc("web", loadBalancer("203.0.113.7"), func(s *v1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{" 198.51.100.0/24 ", "bogus", "2001:db8::/64", "192.0.2.1/24"}
		})
		st := ComputeService(s, eps, node("192.168.0.2"), noLocalhost)
		lb := frontendByType(t, st, LoadBalancerIP)
		want := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.0/24")}
		if !slices.Equal(lb.SourceRanges, want) {
			t.Errorf("source ranges %v, want %v", lb.SourceRanges, want)
		}
		if np := frontendByType(t, st, NodePort); len(np.SourceRanges) != 0 {
			t.Errorf("NodePorts bypass source ranges, got %v", np.SourceRanges)
		}
		if len(st.Problems) != 1 || st.Problems[0].Reason != "InvalidSourceRange" || !strings.Contains(st.Problems[0].Message, "bogus") {
			t.Errorf("problems %+v", st.Problems)
		}
	})

	t.Run("ClientIP affinity with the default and a given timeout", func(t *testing.T) {
		s := svc("web", func(s *v1.Service) { s.Spec.SessionAffinity = v1.ServiceAffinityClientIP })
		if got := ComputeService(s, eps, node("192.168.0.2"), cfgWith()).Frontends[0].Affinity; got != 3*time.Hour {
			t.Errorf("default affinity %v", got)
		}
		s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
		if got := ComputeService(s, eps, node("192.168.0.2"), cfgWith()).Frontends[0].Affinity; got != time.Minute {
			t.Errorf("affinity %v", got)
		}
		for _, bad := range []int32{-5, 0, 86401} {
			s.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds = ptr.To(bad)
			st := ComputeService(s, eps, node("192.168.0.2"), cfgWith())
			if got := st.Frontends[0].Affinity; got != 3*time.Hour {
				t.Errorf("timeout %d: affinity %v, want the default", bad, got)
			}
			if len(st.Problems) != 1 || st.Problems[0].Reason != "InvalidAffinityTimeout" {
				t.Errorf("timeout %d: problems %+v, want InvalidAffinityTimeout", bad, st.Problems)
			}
		}
		s.Spec.SessionAffinity = v1.ServiceAffinityNone
		if got := ComputeService(s, eps, node("192.168.0.2"), cfgWith()).Frontends[0].Affinity; got != 0 {
			t.Errorf("no affinity expected, got %v", got)
		}
	})

	t.Run("health check node port and local endpoints", func(t *testing.T) {
		s := svc("web", loadBalancer("203.0.113.7"), etpLocal, func(s *v1.Service) { s.Spec.HealthCheckNodePort = 32000 })
		sl := []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.1/l", "10.1.0.2/l", "10.1.0.3", "10.1.0.4/lt")}
		st := ComputeService(s, sl, node("192.168.0.2"), noLocalhost)
		if st.HealthCheckNodePort != 32000 || st.LocalEndpoints != 2 {
			t.Errorf("hc port %d, local endpoints %d; want 32000, 2", st.HealthCheckNodePort, st.LocalEndpoints)
		}
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
		if st := ComputeService(s, sl, node("192.168.0.2"), noLocalhost); st.HealthCheckNodePort != 0 {
			t.Errorf("Cluster policy has no health check, got %d", st.HealthCheckNodePort)
		}
	})
}

// cip is the cluster IP frontend of svc("web") with the one endpoint 10.1.0.1:8080.
const cip = "ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080 host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"

func TestMalformedServices(t *testing.T) {
	eps := []*discovery.EndpointSlice{slice("web-1", 8080, "10.1.0.1")}
	runComputeCases(t, []computeCase{
		{name: "no ports", svc: svc("web", func(s *v1.Service) { s.Spec.Ports = nil }), slices: eps, problems: []string{"NoPorts"}},
		{name: "a cluster IP that is no address", svc: svc("web", clusterIPs("300.1.1.1")), slices: eps, problems: []string{"InvalidClusterIP"}},
		{
			name: "a port number out of range", slices: eps,
			svc:      svc("web", func(s *v1.Service) { s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "bad", Port: 70000}) }),
			want:     []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080 host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"},
			problems: []string{"InvalidPort"},
		},
		{
			name: "a protocol the API does not have", slices: eps,
			svc: svc("web", func(s *v1.Service) {
				s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "bad", Port: 81, Protocol: "ICMP"})
			}),
			want:     []string{cip},
			problems: []string{"InvalidProtocol"},
		},
		{
			// Without a --node-port-range nothing else stops it; it used to become port 65535.
			name: "a nodePort that is no port number", slices: eps,
			svc:      svc("web", nodePort(-1)),
			cfg:      cfgWith(func(c *Config) { c.NodePortRange = PortRange{} }),
			want:     []string{cip},
			problems: []string{"InvalidNodePort"},
		},
		{
			name: "a health-check node port that is no port number", slices: eps,
			svc:  svc("web", func(s *v1.Service) { s.Spec.HealthCheckNodePort = 70000 }),
			want: []string{cip}, problems: []string{"InvalidHealthCheckNodePort"},
		},
	})
}

// Slices from files or an older API server may carry what validation refuses: each
// such port, protocol and address is left out and reported, never wrapped into a
// port or address that exists.
func TestMalformedEndpointSlices(t *testing.T) {
	good := slice("web-0", 8080, "10.1.0.1")
	withPort := func(port int32) *discovery.EndpointSlice { return slice("web-1", port, "10.1.0.2") }
	var cases []computeCase
	for _, port := range []int32{-1, 0, 65536, 70000} {
		cases = append(cases, computeCase{
			name: fmt.Sprintf("port %d", port), svc: svc("web"),
			slices: []*discovery.EndpointSlice{good, withPort(port)}, want: []string{cip}, problems: []string{"InvalidEndpointPort"},
		})
	}
	badProto := withPort(8080)
	badProto.Ports[0].Protocol = ptr.To(v1.Protocol("ICMP"))
	badAddrs := slice("web-1", 8080, "10.1.0.300", "10.1.0.2")
	badAddrs.Endpoints = append(badAddrs.Endpoints, discovery.Endpoint{Addresses: []string{"fd00::2"}})
	cases = append(cases, computeCase{
		name: "a protocol the API does not have", svc: svc("web"),
		slices: []*discovery.EndpointSlice{good, badProto}, want: []string{cip}, problems: []string{"InvalidEndpointProtocol"},
	}, computeCase{
		name: "addresses that are not of the slice's family", svc: svc("web"), slices: []*discovery.EndpointSlice{good, badAddrs},
		want:     []string{"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080,10.1.0.2:8080 host=10.1.0.1:8080,10.1.0.2:8080 +masq out=10.1.0.1:8080,10.1.0.2:8080 +masq"},
		problems: []string{"InvalidEndpointAddress", "InvalidEndpointAddress"},
	})
	runComputeCases(t, cases)
}

func TestDualStack(t *testing.T) {
	s := svc("web", clusterIPs("172.30.0.1", "fd00::1"), nodePort(30080))
	sl := []*discovery.EndpointSlice{slice("web-v4", 8080, "10.1.0.1"), slice("web-v6", 8080, "fd01::1")}
	runComputeCases(t, []computeCase{{
		name: "both families on a dual-stack node",
		svc:  s, slices: sl, node: node("192.168.0.2", "2001:db8::2"),
		want: []string{
			"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080 host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq",
			"NodePort 127.0.0.1:30080/TCP pod=10.1.0.1:8080 +masq host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq",
			"NodePort 192.168.0.2:30080/TCP pod=10.1.0.1:8080 +masq host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq",
			// No IPv6 cluster CIDR: no detector for IPv6, so no masquerade by source (kube-proxy's
			// detector is per family).
			"ClusterIP [fd00::1]:80/TCP pod=[fd01::1]:8080 host=[fd01::1]:8080 out=[fd01::1]:8080",
			"NodePort [2001:db8::2]:30080/TCP pod=[fd01::1]:8080 +masq host=[fd01::1]:8080 +masq out=[fd01::1]:8080 +masq"},
	}, {
		name: "--nodeport-addresses without a CIDR of a family selects every address of it (kube-proxy reads the flag per family)",
		svc:  s, slices: sl, node: node("192.168.0.2", "2001:db8::2"),
		cfg: cfgWith(func(c *Config) {
			c.NodePortAddresses, _ = ParseNodePortAddresses([]string{"10.9.0.0/16"})
		}),
		want: []string{
			"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080 host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq",
			"ClusterIP [fd00::1]:80/TCP pod=[fd01::1]:8080 host=[fd01::1]:8080 out=[fd01::1]:8080",
			"NodePort [2001:db8::2]:30080/TCP pod=[fd01::1]:8080 +masq host=[fd01::1]:8080 +masq out=[fd01::1]:8080 +masq"},
	}, {
		name: "only the IPv4 family on an IPv4 node",
		svc:  s, slices: sl,
		cfg: cfgWith(func(c *Config) { c.LocalhostNodePorts = false }),
		want: []string{
			"ClusterIP 172.30.0.1:80/TCP pod=10.1.0.1:8080 host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq",
			"NodePort 192.168.0.2:30080/TCP pod=10.1.0.1:8080 +masq host=10.1.0.1:8080 +masq out=10.1.0.1:8080 +masq"},
	}})
}

func TestParseFlags(t *testing.T) {
	if _, err := ParsePortRange("32767-30000"); err == nil {
		t.Error("a reversed port range must fail")
	}
	if r, err := ParsePortRange("30000+2767"); err != nil || r.Last() != 32767 {
		t.Errorf("30000+2767: %v %v", r, err)
	}
	if _, err := ParseNodePortAddresses([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad CIDR must fail")
	}
	if _, err := ParseNodePortAddresses([]string{"primary", "10.0.0.0/8"}); err == nil {
		t.Error("primary with CIDRs must fail")
	}
}
