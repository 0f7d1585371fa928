package bpf

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

type fakeConntrack map[netlink.InetFamily][]*netlink.ConntrackFlow

func (f fakeConntrack) ConntrackTableList(_ netlink.ConntrackTableType, fam netlink.InetFamily) ([]*netlink.ConntrackFlow, error) {
	return f[fam], nil
}

func flow(proto uint8, src, dst, rsrc, rdst string) *netlink.ConntrackFlow {
	tuple := func(a, b string) netlink.IPTuple {
		s, d := netip.MustParseAddrPort(a), netip.MustParseAddrPort(b)
		return netlink.IPTuple{Protocol: proto, SrcIP: net.IP(s.Addr().AsSlice()), DstIP: net.IP(d.Addr().AsSlice()),
			SrcPort: s.Port(), DstPort: d.Port()}
	}
	return &netlink.ConntrackFlow{Forward: tuple(src, dst), Reverse: tuple(rsrc, rdst)}
}

// Only masqueraded connections' reply tuples are copied, and a refresh drops the ones that ended.
func TestNATTakenRefresh(t *testing.T) {
	masq := flow(unix.IPPROTO_TCP, "203.0.113.10:40000", "192.168.0.2:30080", "10.0.1.1:8080", "192.168.0.2:40000")
	moved := flow(unix.IPPROTO_UDP, "203.0.113.11:5353", "192.168.0.2:30053", "10.0.1.2:53", "192.168.0.2:61000")
	dnatOnly := flow(unix.IPPROTO_TCP, "10.0.1.5:41000", "10.96.0.10:80", "10.0.1.1:8080", "10.0.1.5:41000")
	icmp := flow(unix.IPPROTO_ICMP, "203.0.113.10:0", "192.168.0.2:0", "192.168.0.2:0", "203.0.113.12:0")
	v6 := flow(unix.IPPROTO_TCP, "[2001:db8::10]:40000", "[fd00::2]:30080", "[fd00:1::1]:8080", "[fd00::2]:40001")
	ct := fakeConntrack{unix.AF_INET: {masq, moved, dnatOnly, icmp}, unix.AF_INET6: {v6}}
	m := NewFakeMap[tcCtKey, uint8](16)
	n := &natTaken{ct: ct, m: m}
	if found, err := n.refresh(); found != 3 || err != nil {
		t.Fatalf("refresh: %d, %v; want the 3 masqueraded", found, err)
	}
	key := func(s, d string, proto uint8) tcCtKey {
		sa, da := netip.MustParseAddrPort(s), netip.MustParseAddrPort(d)
		return tcCtKey{Saddr: addr16(sa.Addr()), Daddr: addr16(da.Addr()), Sport: htons(sa.Port()), Dport: htons(da.Port()), Proto: proto}
	}
	for _, k := range []tcCtKey{key("10.0.1.1:8080", "192.168.0.2:40000", unix.IPPROTO_TCP),
		key("10.0.1.2:53", "192.168.0.2:61000", unix.IPPROTO_UDP), key("[fd00:1::1]:8080", "[fd00::2]:40001", unix.IPPROTO_TCP)} {
		if _, ok, _ := m.Get(k); !ok {
			t.Errorf("missing %+v", k)
		}
	}
	ct[unix.AF_INET] = []*netlink.ConntrackFlow{moved}
	ct[unix.AF_INET6] = nil
	if found, err := n.refresh(); found != 1 || err != nil {
		t.Fatalf("second refresh: %d, %v", found, err)
	}
	if all, _ := m.All(); len(all) != 1 {
		t.Errorf("after the others ended: %v", all)
	}
}
