package topology

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// client names where a probe runs: a pod or an external client, and its address.
type client struct {
	ns func(*Topology) string
	ip string
}

func pod(name, ip string) client {
	return client{func(t *Topology) string { return t.PodNS(name) }, ip}
}

func ext(ip string) client {
	return client{func(t *Topology) string { return t.ExternalNS(ip) }, ip}
}

// TestRouting checks plain routed paths without any proxy: the echo server answers from the address
// that was dialled and sees the client's own address (no NAT anywhere), with rp_filter off and strict.
func TestRouting(t *testing.T) {
	for _, rp := range []int{0, 1} {
		t.Run(fmt.Sprintf("rp_filter=%d", rp), func(t *testing.T) {
			topo := build(t, standardScenario(rp))
			if err := topo.AssertIsolated(); err != nil {
				t.Fatal(err)
			}
			got, err := topo.Run(context.Background(), topo.NodeNS(), "cat", "/proc/sys/net/ipv4/conf/all/rp_filter")
			if err != nil || strings.TrimSpace(got) != fmt.Sprint(rp) {
				t.Fatalf("node rp_filter %q (%v), want %d", got, err, rp)
			}
			for _, c := range []struct {
				name string
				from client
				dst  string
			}{
				{"local pod to local pod", pod("a2", "10.0.1.2"), "10.0.1.1"},
				{"local pod to remote pod", pod("a1", "10.0.1.1"), "10.0.2.1"},
				{"remote pod to local pod", pod("b1", "10.0.2.1"), "10.0.1.2"},
				{"external to remote pod", ext("203.0.113.10"), "10.0.2.1"},
				{"external to local pod", ext("198.51.100.20"), "10.0.1.1"},
				{"IPv6 local pod to remote pod", pod("a1", "fd00:1::1"), "fd00:2::1"},
				{"IPv6 external to local pod", ext("2001:db8:ff::10"), "fd00:1::1"},
				{"IPv6 external to remote pod", ext("2001:db8:ff::10"), "fd00:2::1"},
			} {
				for _, proto := range []string{"tcp", "udp"} {
					t.Run(c.name+"/"+proto, func(t *testing.T) {
						port := map[string]uint16{"tcp": 80, "udp": 53}[proto]
						dst := netip.AddrPortFrom(netip.MustParseAddr(c.dst), port).String()
						r := probeOne(t, topo, c.from.ns(topo), proto, dst, ProbeOptions{})
						checkDirect(t, r, dst, c.from.ip)
					})
				}
			}
		})
	}
}

// TestNodeToPods checks the node itself reaches its pods and the remote ones, with several
// connections from one probe process (-n).
func TestNodeToPods(t *testing.T) {
	topo := build(t, standardScenario(0))
	for _, dst := range []string{"10.0.1.1:80", "10.0.2.1:80"} {
		rs := probe(t, topo, topo.NodeNS(), "tcp", dst, ProbeOptions{N: 3, Src: "192.168.0.2"})
		if len(rs) != 3 {
			t.Fatalf("%s: %d results, want 3: %+v", dst, len(rs), rs)
		}
		for _, r := range rs {
			checkDirect(t, r, dst, "192.168.0.2")
		}
		if rs[0].Local == rs[1].Local {
			t.Errorf("-n reused the source address %s: not a new connection", rs[0].Local)
		}
	}
}

// TestRefused: a pod without a listener answers TCP with a RST and UDP with ICMP port unreachable.
func TestRefused(t *testing.T) {
	topo := build(t, standardScenario(0))
	for _, c := range []struct{ proto, dst string }{
		{"tcp", "10.0.1.2:81"}, {"udp", "10.0.1.2:54"}, {"tcp", "10.0.2.1:81"}, {"udp", "[fd00:2::1]:54"},
	} {
		r := probeOne(t, topo, topo.PodNS("a1"), c.proto, c.dst, ProbeOptions{})
		if r.Result != "refused" {
			t.Errorf("%s %s: %+v, want refused", c.proto, c.dst, r)
		}
	}
}

// TestUnknownAddressTimesOut: an address nobody has goes out through the node's default route to the
// lan gateway, which forwards nothing and sends no ICMP error, so the client sees a timeout.
func TestUnknownAddressTimesOut(t *testing.T) {
	topo := build(t, standardScenario(0))
	for _, from := range []string{topo.PodNS("a1"), topo.ExternalNS("203.0.113.10"), topo.NodeNS()} {
		for _, proto := range []string{"tcp", "udp"} {
			r := probeOne(t, topo, from, proto, "10.99.99.99:80", ProbeOptions{Timeout: 300 * time.Millisecond})
			if r.Result != "timeout" {
				t.Errorf("%s from %s: %+v, want timeout", proto, from, r)
			}
		}
	}
}

func probe(t *testing.T, topo *Topology, ns, proto, dst string, o ProbeOptions) []ProbeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := topo.Probe(ctx, ns, proto, dst, o)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func probeOne(t *testing.T, topo *Topology, ns, proto, dst string, o ProbeOptions) ProbeResult {
	t.Helper()
	rs := probe(t, topo, ns, proto, dst, o)
	if len(rs) != 1 {
		t.Fatalf("%d probe results, want 1: %+v", len(rs), rs)
	}
	return rs[0]
}

// checkDirect wants an answer from dst itself, which saw the client's own address and port.
func checkDirect(t *testing.T, r ProbeResult, dst, clientIP string) {
	t.Helper()
	if r.Result != "ok" || r.Endpoint != dst {
		t.Fatalf("got %+v, want ok from %s", r, dst)
	}
	peer, err := netip.ParseAddrPort(r.Peer)
	if err != nil || peer.Addr().String() != clientIP || r.Peer != r.Local {
		t.Errorf("server saw %s, client was %s at %s: want the client's own address (no NAT)", r.Peer, clientIP, r.Local)
	}
}
