package netfilter

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Conntrack removes stale UDP conntrack entries. UDP has no connection to end: a client that keeps
// sending on one socket keeps its entry alive, and with it the verdict it got the first time, so
// after a change of backends the entry must go for the next packet to be NATed afresh (kube-proxy's
// conntrack cleanup). TCP entries are left alone: their connections end by themselves.
type Conntrack interface {
	// ClearService removes UDP entries whose original destination is ip:port: a service IP or
	// node address and port that just got its first endpoint, whose packets were being rejected
	// or blackholed. Port 0 means every port of ip; an unspecified ip (0.0.0.0, ::) every
	// destination with that port, as kube-proxy clears NodePorts.
	ClearService(ip netip.Addr, port uint16) error
	// ClearEndpoint removes UDP entries to the frontend svc (ip:port, port 0 for all ports of
	// ip, unspecified ip for any destination) that were DNATed to ep, an endpoint that went away
	// (ep's port 0: any port of ep's address).
	ClearEndpoint(svc, ep netip.AddrPort) error
	// Clear removes everything stale names in one pass over the conntrack table per family:
	// a sync should collect its stale entries and call this once. It returns how many entries
	// were removed.
	Clear(stale StaleUDP) (int, error)
}

// StaleUDP is what one sync asks conntrack to forget; see Conntrack for the wildcards.
type StaleUDP struct {
	// Services are frontends (original destination ip:port) whose entries all go.
	Services []netip.AddrPort
	// Endpoints are frontend/endpoint pairs whose DNATed entries go.
	Endpoints []StaleEndpoint
}

// StaleEndpoint is an endpoint that went away from a frontend.
type StaleEndpoint struct{ Service, Endpoint netip.AddrPort }

// conntrackDeleter is the part of *netlink.Handle the cleanup uses, so tests can count the passes.
type conntrackDeleter interface {
	ConntrackDeleteFilters(table netlink.ConntrackTableType, family netlink.InetFamily,
		filters ...netlink.CustomConntrackFilter) (uint, error)
}

// NetlinkConntrack deletes entries over netlink (NETLINK_NETFILTER), as `conntrack -D` does: one
// dump of the table per family, and one delete message per matching entry. No process is started.
type NetlinkConntrack struct {
	h conntrackDeleter
}

// conntrackDumpAttempts bounds the retries of a dump that the kernel interrupted (the table changed
// while it was being read): the entries seen are deleted anyway, the retry catches the others.
const conntrackDumpAttempts = 3

// NewConntrack returns the netlink cleanup on h, nil for the caller's network namespace (a fresh
// socket per call, in the namespace of the calling thread). A handle for another namespace
// (netlink.NewHandleAt) must have been opened for unix.NETLINK_NETFILTER: without that socket the
// netlink package would quietly talk to the calling thread's namespace instead.
func NewConntrack(h *netlink.Handle) (*NetlinkConntrack, error) {
	if h == nil {
		return &NetlinkConntrack{h: &netlink.Handle{}}, nil
	}
	if !h.SupportsNetlinkFamily(unix.NETLINK_NETFILTER) {
		return nil, errors.New("conntrack: the netlink handle has no NETLINK_NETFILTER socket")
	}
	return &NetlinkConntrack{h: h}, nil
}

func (c *NetlinkConntrack) ClearService(ip netip.Addr, port uint16) error {
	_, err := c.Clear(StaleUDP{Services: []netip.AddrPort{netip.AddrPortFrom(ip, port)}})
	return err
}

func (c *NetlinkConntrack) ClearEndpoint(svc, ep netip.AddrPort) error {
	_, err := c.Clear(StaleUDP{Endpoints: []StaleEndpoint{{Service: svc, Endpoint: ep}}})
	return err
}

func (c *NetlinkConntrack) Clear(stale StaleUDP) (int, error) {
	filters, err := newUDPFilters(stale)
	if err != nil {
		return 0, err
	}
	total := 0
	var errs []error
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		f := filters[fam]
		if f == nil {
			continue
		}
		n, err := c.deleteMatching(fam, f)
		total += n
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

func (c *NetlinkConntrack) deleteMatching(fam netlink.InetFamily, f *udpFilter) (int, error) {
	total := 0
	for attempt := 1; ; attempt++ {
		n, err := c.h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f)
		total += int(n)
		if err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == conntrackDumpAttempts {
			if err != nil {
				err = fmt.Errorf("conntrack: delete UDP entries (family %d): %w", fam, err)
			}
			return total, err
		}
	}
}

// udpFilter matches the UDP entries of one family that StaleUDP names, with a few map lookups per
// entry whatever the number of services and endpoints.
type udpFilter struct {
	services  map[netip.AddrPort]bool
	endpoints map[StaleEndpoint]bool
}

// newUDPFilters validates stale and splits it by family.
func newUDPFilters(stale StaleUDP) (map[netlink.InetFamily]*udpFilter, error) {
	out := map[netlink.InetFamily]*udpFilter{}
	get := func(a netip.Addr) *udpFilter {
		fam := netlink.InetFamily(unix.AF_INET6)
		if a.Is4() {
			fam = unix.AF_INET
		}
		if out[fam] == nil {
			out[fam] = &udpFilter{services: map[netip.AddrPort]bool{}, endpoints: map[StaleEndpoint]bool{}}
		}
		return out[fam]
	}
	for _, s := range stale.Services {
		s = unmapAddrPort(s)
		if !s.Addr().IsValid() || (s.Addr().IsUnspecified() && s.Port() == 0) {
			return nil, fmt.Errorf("conntrack: stale service %v would match every UDP entry", s)
		}
		get(s.Addr()).services[s] = true
	}
	for _, e := range stale.Endpoints {
		e = StaleEndpoint{Service: unmapAddrPort(e.Service), Endpoint: unmapAddrPort(e.Endpoint)}
		svc, ep := e.Service.Addr(), e.Endpoint.Addr()
		if !svc.IsValid() || !ep.IsValid() || ep.IsUnspecified() || svc.Is4() != ep.Is4() {
			return nil, fmt.Errorf("conntrack: bad stale endpoint %v of %v", e.Endpoint, e.Service)
		}
		get(svc).endpoints[e] = true
	}
	return out, nil
}

func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// MatchConntrackFlow is netlink.CustomConntrackFilter: the original direction holds the frontend
// the client used, the reply direction's source the endpoint it was DNATed to.
func (f *udpFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	dst := flowAddrPort(flow.Forward.DstIP, flow.Forward.DstPort)
	ep := flowAddrPort(flow.Reverse.SrcIP, flow.Reverse.SrcPort)
	eps := [2]netip.AddrPort{ep, netip.AddrPortFrom(ep.Addr(), 0)} // ep's port 0: any port
	for _, svc := range frontendKeys(dst) {
		if f.services[svc] {
			return true
		}
		for _, e := range eps {
			if f.endpoints[StaleEndpoint{Service: svc, Endpoint: e}] {
				return true
			}
		}
	}
	return false
}

// frontendKeys are the keys a destination can be named by: exact, any port of the address, and
// the port on any address of the family.
func frontendKeys(ap netip.AddrPort) [3]netip.AddrPort {
	unspec := netip.IPv6Unspecified()
	if ap.Addr().Is4() {
		unspec = netip.IPv4Unspecified()
	}
	return [3]netip.AddrPort{ap, netip.AddrPortFrom(ap.Addr(), 0), netip.AddrPortFrom(unspec, ap.Port())}
}

func flowAddrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

var _ netlink.CustomConntrackFilter = (*udpFilter)(nil)
