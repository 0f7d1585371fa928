package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// kernelLinks is the Links interface over rtnetlink.
type kernelLinks struct{ h *netlink.Handle }

// NewKernelLinks opens rtnetlink in the network namespace at nsPath ("" for the
// caller's).
func NewKernelLinks(nsPath string) (Links, error) {
	ns := netns.None()
	if nsPath != "" {
		var err error
		if ns, err = netns.GetFromPath(nsPath); err != nil {
			return nil, fmt.Errorf("netns %s: %w", nsPath, err)
		}
		defer ns.Close()
	}
	// NETLINK_ROUTE only: with no families the handle also opens an XFRM socket,
	// which fails on kernels without xfrm_user.
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return &kernelLinks{h: h}, nil
}

func (k *kernelLinks) link(name string) (netlink.Link, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%s: %w", name, ErrNoDevice)
		}
		return nil, err
	}
	return l, nil
}

func (k *kernelLinks) EnsureDummy(name string) error {
	l, err := k.link(name)
	if errors.Is(err, ErrNoDevice) {
		if err := k.h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		if l, err = k.link(name); err != nil {
			return err
		}
		// No IPv6 link-local address: the device carries service addresses only.
		// (It fails where IPv6 is disabled, where there is nothing to avoid.)
		_ = k.h.LinkSetIP6AddrGenMode(l, nl.IN6_ADDR_GEN_MODE_NONE)
	}
	if err != nil {
		return err
	}
	if l.Type() != "dummy" {
		return fmt.Errorf("%s is a %s device, not a dummy", name, l.Type())
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return k.h.LinkSetUp(l)
	}
	return nil
}

func (k *kernelLinks) DeleteDummy(name string) error {
	l, err := k.link(name)
	if errors.Is(err, ErrNoDevice) {
		return nil
	}
	if err != nil {
		return err
	}
	if l.Type() != "dummy" {
		return fmt.Errorf("%s is a %s device, not a dummy: not deleting it", name, l.Type())
	}
	return k.h.LinkDel(l)
}

func (k *kernelLinks) Addrs(name string) ([]netip.Addr, error) {
	l, err := k.link(name)
	if err != nil {
		return nil, err
	}
	list, err := k.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	return addrsOf(list, func(netlink.Addr) bool { return true }), nil
}

// AddAddr adds the address as a host route's worth (/32, /128). An IPv6 one
// skips duplicate address detection (it would stay tentative, unusable, for a
// second) and is deprecated, so the node never picks it as the source of its
// own connections elsewhere; as a destination it works all the same.
func (k *kernelLinks) AddAddr(name string, a netip.Addr) error {
	l, err := k.link(name)
	if err != nil {
		return err
	}
	if err := k.h.AddrAdd(l, hostAddr(a)); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

func (k *kernelLinks) DelAddr(name string, a netip.Addr) error {
	l, err := k.link(name)
	if err != nil {
		return err
	}
	if err := k.h.AddrDel(l, hostAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return err
	}
	return nil
}

func hostAddr(a netip.Addr) *netlink.Addr {
	out := &netlink.Addr{IPNet: netlink.NewIPNet(net.IP(a.AsSlice()))}
	if a.Is6() {
		out.Flags = unix.IFA_F_NODAD
		out.PreferedLft, out.ValidLft = 0, 0xffffffff
	}
	return out
}

func (k *kernelLinks) LocalAddrs(except string) ([]netip.Addr, error) {
	skip := -1
	if l, err := k.link(except); err == nil {
		skip = l.Attrs().Index
	} else if !errors.Is(err, ErrNoDevice) {
		return nil, err
	}
	list, err := k.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	return addrsOf(list, func(a netlink.Addr) bool { return a.LinkIndex != skip }), nil
}

// addrsOf leaves out IPv6 link-local addresses, which every device that is up
// may have and no service uses (as kube-proxy does).
func addrsOf(list []netlink.Addr, keep func(netlink.Addr) bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range list {
		if a.IPNet == nil || !keep(a) {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !(ip.Is6() && ip.IsLinkLocalUnicast()) {
			out = append(out, ip.Unmap())
		}
	}
	return out
}
