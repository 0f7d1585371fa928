package ipvs

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"sync"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/dataplane"
)

// procIPVS exists while the kernel has IPVS (built in, or ip_vs loaded).
const procIPVS = "/proc/net/ip_vs"

// ErrNoIPVS says the kernel has no IPVS.
var ErrNoIPVS = errors.New("the kernel has no IPVS (no " + procIPVS + "; load the ip_vs module, or use --mode=iptables)")

// Supported tells whether the kernel has IPVS. It does not load the module;
// NewKernelIPVS tries to (modprobe ip_vs) before it checks.
func Supported() error {
	if _, err := os.Stat(procIPVS); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ErrNoIPVS
		}
		return fmt.Errorf("ipvs: %w", err)
	}
	return nil
}

// kernelIPVS is the IPVS interface over generic netlink (github.com/moby/ipvs).
type kernelIPVS struct {
	mu sync.Mutex // one request at a time on the handle's socket
	h  *libipvs.Handle
}

// NewKernelIPVS opens IPVS in the network namespace at nsPath ("" for the
// caller's). It fails when the kernel has no IPVS: moby/ipvs itself would
// succeed and every later call would do nothing.
func NewKernelIPVS(nsPath string) (IPVS, error) {
	h, err := libipvs.New(nsPath) // runs modprobe ip_vs first
	if err != nil {
		return nil, fmt.Errorf("ipvs: %w", err)
	}
	if err := Supported(); err != nil {
		h.Close()
		return nil, err
	}
	return &kernelIPVS{h: h}, nil
}

func (k *kernelIPVS) Services() ([]VirtualService, error) {
	k.mu.Lock()
	svcs, err := k.h.GetServices()
	k.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := make([]VirtualService, 0, len(svcs))
	for _, s := range svcs {
		if s.FWMark != 0 {
			continue
		}
		addr, ok := netip.AddrFromSlice(s.Address)
		proto := protocolName(s.Protocol)
		if !ok || proto == "" {
			continue // not a service Switchyard could have made
		}
		out = append(out, VirtualService{
			FrontendKey: dataplane.FrontendKey{Addr: addr.Unmap(), Port: s.Port, Protocol: proto},
			Scheduler:   s.SchedName, Flags: s.Flags &^ FlagHashed, Timeout: s.Timeout,
		})
	}
	return out, nil
}

func (k *kernelIPVS) AddService(s VirtualService) error {
	return k.do(func() error { return k.h.NewService(toService(s)) })
}

func (k *kernelIPVS) UpdateService(s VirtualService) error {
	return k.do(func() error { return k.h.UpdateService(toService(s)) })
}

func (k *kernelIPVS) DeleteService(key dataplane.FrontendKey) error {
	return k.do(func() error { return k.h.DelService(toService(VirtualService{FrontendKey: key})) })
}

func (k *kernelIPVS) Destinations(key dataplane.FrontendKey) ([]Destination, error) {
	k.mu.Lock()
	dsts, err := k.h.GetDestinations(toService(VirtualService{FrontendKey: key}))
	k.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := make([]Destination, 0, len(dsts))
	for _, d := range dsts {
		addr, ok := netip.AddrFromSlice(d.Address)
		if !ok {
			return nil, fmt.Errorf("destination of %s with address %v", key, d.Address)
		}
		out = append(out, Destination{Addr: addr.Unmap(), Port: d.Port, Weight: d.Weight,
			ActiveConns: d.ActiveConnections, InactiveConns: d.InactiveConnections})
	}
	return out, nil
}

func (k *kernelIPVS) AddDestination(key dataplane.FrontendKey, d Destination) error {
	return k.do(func() error { return k.h.NewDestination(toService(VirtualService{FrontendKey: key}), toDestination(d)) })
}

func (k *kernelIPVS) UpdateDestination(key dataplane.FrontendKey, d Destination) error {
	return k.do(func() error {
		return k.h.UpdateDestination(toService(VirtualService{FrontendKey: key}), toDestination(d))
	})
}

func (k *kernelIPVS) DeleteDestination(key dataplane.FrontendKey, ap netip.AddrPort) error {
	d := toDestination(Destination{Addr: ap.Addr(), Port: ap.Port()})
	return k.do(func() error { return k.h.DelDestination(toService(VirtualService{FrontendKey: key}), d) })
}

func (k *kernelIPVS) do(f func() error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return f()
}

// toService fills in what the kernel keys a service on besides address, port
// and protocol: the family, and the netmask (a host's, as kube-proxy sets it;
// it only matters to persistence, whose templates are per client address).
func toService(s VirtualService) *libipvs.Service {
	out := &libipvs.Service{
		Address: net.IP(s.Addr.AsSlice()), Port: s.Port, Protocol: protocolNumber(s.Protocol),
		SchedName: s.Scheduler, Flags: s.Flags, Timeout: s.Timeout,
		AddressFamily: unix.AF_INET, Netmask: 0xffffffff,
	}
	if s.Addr.Is6() {
		out.AddressFamily, out.Netmask = unix.AF_INET6, 128
	}
	return out
}

func toDestination(d Destination) *libipvs.Destination {
	out := &libipvs.Destination{Address: net.IP(d.Addr.AsSlice()), Port: d.Port, Weight: d.Weight,
		ConnectionFlags: libipvs.ConnectionFlagMasq, AddressFamily: unix.AF_INET}
	if d.Addr.Is6() {
		out.AddressFamily = unix.AF_INET6
	}
	return out
}

func protocolNumber(p dataplane.Protocol) uint16 {
	switch p {
	case dataplane.TCP:
		return unix.IPPROTO_TCP
	case dataplane.UDP:
		return unix.IPPROTO_UDP
	case dataplane.SCTP:
		return unix.IPPROTO_SCTP
	}
	return 0
}

func protocolName(n uint16) dataplane.Protocol {
	switch n {
	case unix.IPPROTO_TCP:
		return dataplane.TCP
	case unix.IPPROTO_UDP:
		return dataplane.UDP
	case unix.IPPROTO_SCTP:
		return dataplane.SCTP
	}
	return ""
}
