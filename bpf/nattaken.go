package bpf

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// conntrackLister is the part of *netlink.Handle natTaken reads conntrack with.
type conntrackLister interface {
	ConntrackTableList(table netlink.ConntrackTableType, family netlink.InetFamily) ([]*netlink.ConntrackFlow, error)
}

// natTaken keeps nat_taken equal to the reply tuples of the connections the kernel's NAT
// masqueraded (kube-proxy's, while it runs beside Switchyard and after it left, until they end),
// so the tc programs never give a flow of theirs one of those ports towards the same backend:
// the backend's replies to both would come to one tuple, and one connection would break.
type natTaken struct {
	ct conntrackLister
	m  Map[tcCtKey, uint8]
}

// refresh copies conntrack's masqueraded reply tuples into the map and removes the ones gone. It
// returns how many there are.
func (n *natTaken) refresh() (int, error) {
	want := map[tcCtKey]bool{}
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		flows, err := n.ct.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			return 0, err
		}
		for _, f := range flows {
			if k, ok := natReplyKey(f); ok {
				want[k] = true
			}
		}
	}
	have, err := n.m.All()
	if err != nil {
		return 0, err
	}
	var errs []error
	for k := range have {
		if !want[k] {
			errs = append(errs, n.m.Delete(k))
		}
	}
	for k := range want {
		if _, ok := have[k]; !ok {
			errs = append(errs, n.m.Put(k, 1))
		}
	}
	return len(want), errors.Join(errs...)
}

// natReplyKey is the reply tuple of a TCP or UDP connection whose source the kernel translated
// (the reply goes to another address or port than the client's), as a ct_key.
func natReplyKey(f *netlink.ConntrackFlow) (tcCtKey, bool) {
	proto := f.Forward.Protocol
	if proto != unix.IPPROTO_TCP && proto != unix.IPPROTO_UDP {
		return tcCtKey{}, false
	}
	src, ok1 := netip.AddrFromSlice(f.Forward.SrcIP)
	rsrc, ok2 := netip.AddrFromSlice(f.Reverse.SrcIP)
	rdst, ok3 := netip.AddrFromSlice(f.Reverse.DstIP)
	if !ok1 || !ok2 || !ok3 || (src.Unmap() == rdst.Unmap() && f.Forward.SrcPort == f.Reverse.DstPort) {
		return tcCtKey{}, false
	}
	return tcCtKey{Saddr: addr16(rsrc.Unmap()), Daddr: addr16(rdst.Unmap()), Sport: htons(f.Reverse.SrcPort),
		Dport: htons(f.Reverse.DstPort), Proto: proto}, true
}

// run refreshes every busy interval while conntrack holds masqueraded connections, and every
// idle interval when it held none last time (nothing NATs beside Switchyard).
func (n *natTaken) run(ctx context.Context, busy, idle time.Duration) {
	wait := time.Duration(0)
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		found, err := n.refresh()
		if err != nil && !failing {
			klog.ErrorS(err, "Copying conntrack's NAT ports for the tc programs (logged once until it works)")
		}
		failing = err != nil
		wait = idle
		if found > 0 {
			wait = busy
		}
	}
}
