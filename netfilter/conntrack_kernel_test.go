package netfilter

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/test/topology"
)

// The cleanup against the kernel: UDP flows from the node to service IPs, DNATed to two pods by
// rules in the node's nat OUTPUT chain, then cleared over a netlink socket opened in the node's
// namespace and checked with `conntrack -L` run there.

const ctNATRules4 = `*nat
:SY-CT - [0:0]
-A OUTPUT -j SY-CT
-A SY-CT -d 10.96.0.10/32 -p udp -m udp --dport 53 -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination 10.0.1.1:5353
-A SY-CT -d 10.96.0.10/32 -p udp -m udp --dport 53 -j DNAT --to-destination 10.0.1.2:5353
-A SY-CT -d 10.96.0.11/32 -p udp -m udp --dport 53 -j DNAT --to-destination 10.0.1.1:5353
-A SY-CT -d 10.96.0.11/32 -p udp -m udp --dport 54 -j DNAT --to-destination 10.0.1.1:5353
-A SY-CT -d 10.96.0.11/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 10.0.1.1:5353
COMMIT
`

const ctNATRules6 = `*nat
:SY-CT - [0:0]
-A OUTPUT -j SY-CT
-A SY-CT -d fd00:96::10/128 -p udp -m udp --dport 53 -j DNAT --to-destination [fd00:1::1]:5353
COMMIT
`

func TestConntrackKernel(t *testing.T) {
	support.Require(t)
	topology.RequireTools(t, append(VariantTools(VariantNFT), "conntrack")...)
	port := []topology.Port{{Protocol: "UDP", Port: 5353}, {Protocol: "TCP", Port: 5353}}
	topo := support.Build(t, topology.Scenario{
		Node: topology.Node{Name: "node-a", IPs: []string{"192.168.0.2", "fd00::2"}},
		Pods: []topology.Pod{
			{Name: "p1", IP: "10.0.1.1", IPv6: "fd00:1::1", Local: true, Ports: port},
			{Name: "p2", IP: "10.0.1.2", IPv6: "fd00:1::2", Local: true, Ports: port},
		},
	})
	run := topo.CommandIn(topo.NodeNS())
	for fam, rules := range map[dataplane.Family]string{dataplane.IPv4: ctNATRules4, dataplane.IPv6: ctNATRules6} {
		if err := NewRestorer(fam, VariantNFT, run).Restore(t.Context(), []byte(rules)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	probe(ctx, t, topo, "udp", "10.96.0.10:53", 4)
	probe(ctx, t, topo, "udp", "10.96.0.11:53", 2)
	probe(ctx, t, topo, "udp", "10.96.0.11:54", 1)
	probe(ctx, t, topo, "tcp", "10.96.0.11:53", 1)
	probe(ctx, t, topo, "udp", "[fd00:96::10]:53", 2)
	want := map[string]int{
		"udp 10.96.0.10:53 10.0.1.1:5353": 2, "udp 10.96.0.10:53 10.0.1.2:5353": 2,
		"udp 10.96.0.11:53 10.0.1.1:5353": 2, "udp 10.96.0.11:54 10.0.1.1:5353": 1,
		"tcp 10.96.0.11:53 10.0.1.1:5353": 1, "udp [fd00:96::10]:53 [fd00:1::1]:5353": 2,
	}
	checkEntries(ctx, t, topo, "before", want)

	ct := nodeConntrack(t, topo.NodeNS())
	ap := netip.MustParseAddrPort
	if err := ct.ClearEndpoint(ap("10.96.0.10:53"), ap("10.0.1.2:5353")); err != nil {
		t.Fatal(err)
	}
	delete(want, "udp 10.96.0.10:53 10.0.1.2:5353")
	checkEntries(ctx, t, topo, "after ClearEndpoint", want)

	if err := ct.ClearService(netip.MustParseAddr("10.96.0.11"), 53); err != nil {
		t.Fatal(err)
	}
	delete(want, "udp 10.96.0.11:53 10.0.1.1:5353") // the TCP one stays, as the other port
	checkEntries(ctx, t, topo, "after ClearService", want)

	n, err := ct.Clear(StaleUDP{
		Services:  []netip.AddrPort{ap("10.96.0.11:54")},
		Endpoints: []StaleEndpoint{{ap("[fd00:96::10]:53"), ap("[fd00:1::1]:0")}},
	})
	if err != nil || n != 3 {
		t.Errorf("Clear: %d entries, %v; want 3", n, err)
	}
	delete(want, "udp 10.96.0.11:54 10.0.1.1:5353")
	delete(want, "udp [fd00:96::10]:53 [fd00:1::1]:5353")
	checkEntries(ctx, t, topo, "after Clear", want)
}

// probe sends n datagrams (or connections), each from a new socket: n conntrack entries.
func probe(ctx context.Context, t *testing.T, topo *topology.Topology, proto, dst string, n int) {
	t.Helper()
	res, err := topo.Probe(ctx, topo.NodeNS(), proto, dst, topology.ProbeOptions{N: n, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Result != "ok" {
			t.Fatalf("probe %s %s: %+v", proto, dst, r)
		}
	}
}

// nodeConntrack opens the cleanup on a netlink socket of the node's namespace.
func nodeConntrack(t *testing.T, ns string) *NetlinkConntrack {
	t.Helper()
	h, err := topology.NetlinkHandle(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	ct, err := NewConntrack(h)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// checkEntries compares the node's conntrack table, as `conntrack -L` shows it, with want.
func checkEntries(ctx context.Context, t *testing.T, topo *topology.Topology, when string, want map[string]int) {
	t.Helper()
	got := map[string]int{}
	for _, fam := range []string{"ipv4", "ipv6"} {
		out, err := topo.CommandContext(ctx, topo.NodeNS(), "conntrack", "-L", "-f", fam).Output()
		if err != nil {
			t.Fatalf("conntrack -L -f %s: %v", fam, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if k, ok := entryKey(line); ok {
				got[k]++
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: conntrack has %v, want %v", when, got, want)
	}
	t.Logf("%s: %v", when, got)
}

// entryKey reads a `conntrack -L` line ("udp 17 29 src=A dst=B sport=P dport=Q src=C dst=D
// sport=R dport=S ...") as "proto B:Q C:R": the frontend and the endpoint it was DNATed to.
func entryKey(line string) (string, bool) {
	f := strings.Fields(line)
	if len(f) == 0 || (f[0] != "udp" && f[0] != "tcp") {
		return "", false
	}
	seen := map[string][]string{}
	for _, kv := range f {
		if k, v, ok := strings.Cut(kv, "="); ok {
			seen[k] = append(seen[k], v)
		}
	}
	if len(seen["dst"]) < 2 || len(seen["src"]) < 2 || len(seen["dport"]) < 1 || len(seen["sport"]) < 2 {
		return "", false
	}
	join := func(ip, port string) string {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return ip + ":" + port
		}
		var p uint16
		fmt.Sscan(port, &p)
		return netip.AddrPortFrom(a, p).String()
	}
	return fmt.Sprintf("%s %s %s", f[0], join(seen["dst"][0], seen["dport"][0]), join(seen["src"][1], seen["sport"][1])), true
}
