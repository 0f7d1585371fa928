package ipvs

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/test/golden"
)

// describe is the whole configuration for st as text: the virtual services with
// their destinations, the device's addresses, and every family's rules.
func describe(st *dataplane.State, o Options, nodeLocal map[netip.Addr]bool) string {
	want := Want(st, o, nodeLocal)
	var b strings.Builder
	b.WriteString("# virtual services\n")
	var bound []netip.Addr
	for _, k := range sortedKeys(want) {
		w := want[k]
		fmt.Fprintf(&b, "%s %s flags=%#x timeout=%d", k, w.Service.Scheduler, w.Service.Flags, w.Service.Timeout)
		for i, d := range w.Dests {
			fmt.Fprintf(&b, " -> %s w%d", d.AddrPort(), d.Weight)
			if w.Local[i] {
				b.WriteString(" (local)")
			}
		}
		b.WriteString("\n")
		if w.Bind && !slices.Contains(bound, k.Addr) {
			bound = append(bound, k.Addr)
		}
	}
	b.WriteString("# device addresses\n")
	for _, a := range bound {
		b.WriteString(a.String() + "\n")
	}
	for _, fam := range []dataplane.Family{dataplane.IPv4, dataplane.IPv6} {
		rs := newRuleSet(o)
		for k, w := range want {
			if dataplane.FamilyOf(k.Addr) == fam {
				rs.put(k, renderFrontend(st.Frontends[k], w, o, primaryIP(st.Node, fam)))
			}
		}
		fmt.Fprintf(&b, "# %s rules\n", fam)
		chains := rs.Chains()
		for _, t := range tables {
			for _, name := range slices.Sorted(maps.Keys(chains[t])) {
				fmt.Fprintf(&b, "%s :%s\n", t, name)
				for _, l := range chains[t][name] {
					b.WriteString(l + "\n")
				}
			}
		}
	}
	return b.String()
}

// The pure function, scenario by scenario, against golden files.
func TestWantGolden(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  func(*Options)
		model func(*dataplane.Config)
		setup func(c *cluster)
	}{
		{name: "clusterip", setup: func(c *cluster) {
			// One local endpoint (hairpin), one elsewhere; a second port on the same
			// address, without endpoints (REJECT).
			svc := service("ns", "web", "172.30.0.1")
			svc.Spec.Ports = append(svc.Spec.Ports, svc.Spec.Ports[0])
			svc.Spec.Ports[1].Name, svc.Spec.Ports[1].Port = "p443", 443
			sl := endpoints(svc, 8080, "10.0.1.1/l", "10.0.2.1")
			c.set("ns", "web", svc, sl)
		}},
		{name: "clusterip-masquerade-all", model: func(m *dataplane.Config) { m.MasqueradeAll = true }, setup: func(c *cluster) {
			c.put(service("ns", "web", "172.30.0.1"), "10.0.2.1")
		}},
		{name: "clusterip-no-detector", model: func(m *dataplane.Config) { m.ClusterCIDRs = nil }, setup: func(c *cluster) {
			c.put(service("ns", "web", "172.30.0.1"), "10.0.2.1")
		}},
		{name: "nodeport", setup: func(c *cluster) {
			// On the node's address, not on 127.0.0.1 (the model has both).
			c.put(service("ns", "np", "172.30.0.2", withNodePort(30080)), "10.0.1.1/l", "10.0.2.1")
		}},
		{name: "loadbalancer", setup: func(c *cluster) {
			c.put(service("ns", "lb", "172.30.0.3", withLB("203.0.113.10")), "10.0.2.1")
			// Source ranges that leave the node out, and ones that let it in.
			c.put(service("ns", "lb-ranges", "172.30.0.4", withLB("203.0.113.11"), withSourceRanges("198.51.100.0/24", "10.0.0.0/8")), "10.0.2.1")
			c.put(service("ns", "lb-node", "172.30.0.5", withLB("203.0.113.12"), withSourceRanges("192.168.0.0/24")), "10.0.2.1")
		}},
		{name: "externalip", setup: func(c *cluster) {
			// 192.168.0.2 is the node's: IPVS serves it, the device does not get it.
			c.put(service("ns", "ext", "172.30.0.6", withExternalIPs("198.51.100.7", "192.168.0.2")), "10.0.2.1")
		}},
		{name: "affinity", setup: func(c *cluster) {
			c.put(service("ns", "sticky", "172.30.0.7", withAffinity(600), withNodePort(30081)), "10.0.1.1/l", "10.0.2.1")
		}},
		{name: "scheduler-mh", opts: func(o *Options) { o.Scheduler = "mh" }, setup: func(c *cluster) {
			c.put(service("ns", "web", "172.30.0.1", withAffinity(60)), "10.0.2.1")
		}},
		{name: "no-endpoints", setup: func(c *cluster) {
			// REJECT from pods and outside; IPVS refuses the node's own connections.
			c.put(service("ns", "empty", "172.30.0.8", withNodePort(30082), withLB("203.0.113.13")))
		}},
		{name: "etp-local", setup: func(c *cluster) {
			// Local endpoints: only they, for every client.
			c.put(service("ns", "local", "172.30.0.9", withLB("203.0.113.14"), withETPLocal(32000)), "10.0.1.1/l", "10.0.2.1")
			// None here: every endpoint, pods let in, outside clients dropped.
			c.put(service("ns", "remote", "172.30.0.10", withLB("203.0.113.15"), withETPLocal(32001)), "10.0.2.1", "10.0.2.2")
		}},
		{name: "etp-local-no-detector", model: func(m *dataplane.Config) { m.ClusterCIDRs = nil }, setup: func(c *cluster) {
			c.put(service("ns", "remote", "172.30.0.10", withNodePort(30083), withETPLocal(0)), "10.0.2.1")
		}},
		{name: "itp-local", setup: func(c *cluster) {
			c.put(service("ns", "here", "172.30.0.11", withITPLocal), "10.0.1.1/l", "10.0.2.1")
			// Endpoints only elsewhere: dropped for everyone, the node included.
			c.put(service("ns", "elsewhere", "172.30.0.12", withITPLocal), "10.0.2.1")
		}},
		{name: "terminating", setup: func(c *cluster) {
			// Only a terminating endpoint left: it still serves (the model's rule).
			c.put(service("ns", "t", "172.30.0.13"), "10.0.2.1/t")
		}},
		{name: "ipv6", setup: func(c *cluster) {
			svc := service("ns", "v6", "fd00:96::1", withNodePort(30084), withUDP)
			c.set("ns", "v6", svc, endpoints(svc, 53, "fd00:10::1/l", "fd00:10::2"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := modelConfig()
			if tc.model != nil {
				tc.model(&mc)
			}
			o := Options{Model: mc, MasqueradeBit: 14}
			if tc.opts != nil {
				tc.opts(&o)
			}
			c := newCluster(mc)
			tc.setup(c)
			golden.Check(t, tc.name, describe(c.st, o, setOf(nodeIPs)))
		})
	}
}

// Scheduler defaults to rr; affinity rounds up to whole seconds; a NodePort on
// a loopback address is not IPVS's.
func TestWantFrontendDetails(t *testing.T) {
	f := &dataplane.FrontendState{Frontend: dataplane.Frontend{FrontendKey: key("127.0.0.1:30000/TCP"), Type: dataplane.NodePort}}
	if w := WantFrontend(f, Options{}, nil); w != nil {
		t.Errorf("a NodePort on 127.0.0.1: %+v, want none", w)
	}
	f = &dataplane.FrontendState{Frontend: dataplane.Frontend{FrontendKey: key("172.30.0.1:80/TCP"), Type: dataplane.ClusterIP},
		Affinity: 1500e6, Outside: dataplane.Route{Verdict: dataplane.Reject}, Host: dataplane.Route{Verdict: dataplane.Reject}}
	w := WantFrontend(f, Options{}, nil)
	if w.Service.Scheduler != "rr" || w.Service.Flags != FlagPersistent || w.Service.Timeout != 2 || len(w.Dests) != 0 || !w.Bind {
		t.Errorf("got %+v", w)
	}
}
