package netfilter

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// flowTable is a conntrack table for unit tests: ConntrackDeleteFilters deletes the matching flows
// of the family as the netlink package does (one dump, the first matching filter wins).
type flowTable struct {
	flows     map[netlink.InetFamily][]*netlink.ConntrackFlow
	passes    map[netlink.InetFamily]int
	interrupt int // the next n dumps report ErrDumpInterrupted after deleting what they saw
}

func (ft *flowTable) ConntrackDeleteFilters(table netlink.ConntrackTableType, fam netlink.InetFamily,
	filters ...netlink.CustomConntrackFilter) (uint, error) {
	ft.passes[fam]++
	var keep []*netlink.ConntrackFlow
	n := uint(0)
	for _, fl := range ft.flows[fam] {
		matched := false
		for _, f := range filters {
			matched = matched || f.MatchConntrackFlow(fl)
		}
		if matched {
			n++
		} else {
			keep = append(keep, fl)
		}
	}
	ft.flows[fam] = keep
	if ft.interrupt > 0 {
		ft.interrupt--
		return n, netlink.ErrDumpInterrupted
	}
	return n, nil
}

// ctFlow is proto from client to frontend, DNATed to endpoint.
func ctFlow(proto uint8, client, frontend, endpoint string) *netlink.ConntrackFlow {
	c, fe, ep := netip.MustParseAddrPort(client), netip.MustParseAddrPort(frontend), netip.MustParseAddrPort(endpoint)
	ip := func(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }
	fl := &netlink.ConntrackFlow{}
	fl.Forward = netlink.IPTuple{Protocol: proto, SrcIP: ip(c.Addr()), SrcPort: c.Port(), DstIP: ip(fe.Addr()), DstPort: fe.Port()}
	fl.Reverse = netlink.IPTuple{Protocol: proto, SrcIP: ip(ep.Addr()), SrcPort: ep.Port(), DstIP: ip(c.Addr()), DstPort: c.Port()}
	return fl
}

func flowName(fl *netlink.ConntrackFlow) string {
	return fl.Forward.DstIP.String() + "/" + fl.Reverse.SrcIP.String()
}

const ctUDP, ctTCP = unix.IPPROTO_UDP, unix.IPPROTO_TCP

func newFlowTable() *flowTable {
	return &flowTable{
		passes: map[netlink.InetFamily]int{},
		flows: map[netlink.InetFamily][]*netlink.ConntrackFlow{
			unix.AF_INET: {
				ctFlow(ctUDP, "192.168.0.2:40000", "10.96.0.10:53", "10.0.1.1:5353"),
				ctFlow(ctUDP, "192.168.0.2:40001", "10.96.0.10:53", "10.0.1.2:5353"),
				ctFlow(ctUDP, "192.168.0.2:40002", "10.96.0.10:54", "10.0.1.2:5353"),
				ctFlow(ctTCP, "192.168.0.2:40003", "10.96.0.10:53", "10.0.1.2:5353"),
				ctFlow(ctUDP, "192.168.0.2:40004", "10.96.0.11:53", "10.96.0.11:53"),
				ctFlow(ctUDP, "192.168.0.9:40005", "192.168.0.2:30053", "10.0.1.2:5353"),
				ctFlow(ctUDP, "192.168.0.9:40006", "127.0.0.1:30053", "127.0.0.1:30053"),
			},
			unix.AF_INET6: {
				ctFlow(ctUDP, "[fd00::2]:40000", "[fd00:96::10]:53", "[fd00:1::1]:5353"),
				ctFlow(ctUDP, "[fd00::2]:40001", "[fd00:96::10]:53", "[fd00:1::2]:5353"),
			},
		},
	}
}

func TestConntrackClear(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, c := range []struct {
		name    string
		stale   StaleUDP
		deleted []string // the flows gone, as frontend IP/endpoint IP
	}{
		{"endpoint of a frontend", StaleUDP{Endpoints: []StaleEndpoint{{ap("10.96.0.10:53"), ap("10.0.1.2:5353")}}},
			[]string{"10.96.0.10/10.0.1.2"}},
		{"endpoint of every port of a frontend", StaleUDP{Endpoints: []StaleEndpoint{{ap("10.96.0.10:0"), ap("10.0.1.2:5353")}}},
			[]string{"10.96.0.10/10.0.1.2", "10.96.0.10/10.0.1.2"}},
		{"endpoint on a NodePort of any address", StaleUDP{Endpoints: []StaleEndpoint{{ap("0.0.0.0:30053"), ap("10.0.1.2:0")}}},
			[]string{"192.168.0.2/10.0.1.2"}},
		{"endpoint of another port", StaleUDP{Endpoints: []StaleEndpoint{{ap("10.96.0.10:53"), ap("10.0.1.2:80")}}}, nil},
		{"a rejected service", StaleUDP{Services: []netip.AddrPort{ap("10.96.0.11:53")}}, []string{"10.96.0.11/10.96.0.11"}},
		{"a service's every port", StaleUDP{Services: []netip.AddrPort{ap("10.96.0.10:0")}},
			[]string{"10.96.0.10/10.0.1.1", "10.96.0.10/10.0.1.2", "10.96.0.10/10.0.1.2"}},
		{"a NodePort on every address", StaleUDP{Services: []netip.AddrPort{ap("0.0.0.0:30053")}},
			[]string{"192.168.0.2/10.0.1.2", "127.0.0.1/127.0.0.1"}},
		{"IPv6 and IPv4-mapped", StaleUDP{
			Services:  []netip.AddrPort{ap("[::ffff:10.96.0.11]:53")},
			Endpoints: []StaleEndpoint{{ap("[fd00:96::10]:53"), ap("[fd00:1::1]:5353")}}},
			[]string{"10.96.0.11/10.96.0.11", "fd00:96::10/fd00:1::1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ft := newFlowTable()
			before := allFlows(ft)
			ct := &NetlinkConntrack{h: ft}
			n, err := ct.Clear(c.stale)
			if err != nil {
				t.Fatal(err)
			}
			gone := goneFlows(before, allFlows(ft))
			if n != len(c.deleted) || !reflect.DeepEqual(gone, c.deleted) {
				t.Errorf("deleted %d %q, want %q", n, gone, c.deleted)
			}
			// One pass per family that has something to clear, none for the others.
			for fam, passes := range ft.passes {
				if passes != 1 {
					t.Errorf("family %d: %d passes", fam, passes)
				}
			}
		})
	}
}

func allFlows(ft *flowTable) []*netlink.ConntrackFlow {
	return append(append([]*netlink.ConntrackFlow{}, ft.flows[unix.AF_INET]...), ft.flows[unix.AF_INET6]...)
}

func goneFlows(before, after []*netlink.ConntrackFlow) []string {
	var out []string
	for _, b := range before {
		found := false
		for _, a := range after {
			found = found || a == b
		}
		if !found {
			out = append(out, flowName(b))
		}
	}
	return out
}

func TestConntrackRefusesWildcards(t *testing.T) {
	ap := netip.MustParseAddrPort
	ct := &NetlinkConntrack{h: newFlowTable()}
	for _, s := range []StaleUDP{
		{Services: []netip.AddrPort{ap("0.0.0.0:0")}},
		{Services: []netip.AddrPort{{}}},
		{Endpoints: []StaleEndpoint{{ap("10.96.0.10:53"), ap("0.0.0.0:5353")}}},
		{Endpoints: []StaleEndpoint{{ap("10.96.0.10:53"), ap("[fd00::1]:5353")}}},
		{Endpoints: []StaleEndpoint{{Service: ap("10.96.0.10:53")}}},
	} {
		if _, err := ct.Clear(s); err == nil {
			t.Errorf("Clear(%v): no error", s)
		}
	}
	if err := ct.ClearService(netip.IPv6Unspecified(), 0); err == nil {
		t.Error("ClearService(::, 0): no error")
	}
}

// An interrupted dump is retried; entries deleted on the way count.
func TestConntrackRetriesInterruptedDump(t *testing.T) {
	ft := newFlowTable()
	ft.interrupt = 1
	ct := &NetlinkConntrack{h: ft}
	if err := ct.ClearService(netip.MustParseAddr("10.96.0.10"), 53); err != nil {
		t.Fatal(err)
	}
	if ft.passes[unix.AF_INET] != 2 {
		t.Errorf("%d passes, want 2", ft.passes[unix.AF_INET])
	}
	ft.interrupt = conntrackDumpAttempts
	if err := ct.ClearService(netip.MustParseAddr("10.96.0.10"), 53); !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Errorf("always interrupted: %v", err)
	}
}

func TestNewConntrackNeedsNetfilterSocket(t *testing.T) {
	if _, err := NewConntrack(&netlink.Handle{}); err == nil {
		t.Error("a handle without a NETLINK_NETFILTER socket was accepted")
	}
	if _, err := NewConntrack(nil); err != nil {
		t.Error(err)
	}
}

func TestFakeConntrack(t *testing.T) {
	f := &FakeConntrack{}
	svc, ep := netip.MustParseAddrPort("10.96.0.10:53"), netip.MustParseAddrPort("10.0.1.1:5353")
	if err := f.ClearService(svc.Addr(), svc.Port()); err != nil {
		t.Fatal(err)
	}
	if err := f.ClearEndpoint(svc, ep); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Clear(StaleUDP{Services: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:0")}}); err == nil {
		t.Error("the fake accepted a match-everything service")
	}
	services, endpoints, calls := f.Cleared()
	if !reflect.DeepEqual(services, []netip.AddrPort{svc}) || !reflect.DeepEqual(endpoints, []StaleEndpoint{{svc, ep}}) || calls != 3 {
		t.Errorf("recorded %v %v %d", services, endpoints, calls)
	}
	f.Reset()
	f.Err = errors.New("boom")
	if err := f.ClearService(svc.Addr(), svc.Port()); err == nil {
		t.Error("Err not returned")
	}
}
