package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// lbDraining is tc.c's LB_DRAINING.
const lbDraining = 1

// Drain asks the tc programs pinned in pinDir to start no new flow: from then on a connection
// from outside goes to the stack (to kube-proxy's rules, in a rollback), while the flows the
// programs carry are still translated until they end (LiveFlows). It reports whether anything
// was pinned there. The next agent to load the programs ends the drain.
func Drain(pinDir string) (bool, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, mapLBFlags), nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bpf: drain: %w", err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), uint32(lbDraining)); err != nil {
		return false, fmt.Errorf("bpf: drain: %w", err)
	}
	return true, nil
}

// LiveFlows counts the flows in the connection-tracking maps pinned in pinDir that are neither
// over nor closed: the connections from outside that only these programs still translate.
func LiveFlows(pinDir string) (int, error) {
	now := monotonicNow()
	n := 0
	err := eachPinnedFlow(pinDir, func(_ tcCtKey, v tcCtVal) bool {
		if live(v, now) {
			n++
		}
		return true
	})
	return n, err
}

// eachPinnedFlow calls fn with every entry of the connection-tracking maps pinned in pinDir (of
// none, when nothing is pinned there).
func eachPinnedFlow(pinDir string, fn func(tcCtKey, tcCtVal) bool) error {
	for _, name := range []string{mapCTAssured, mapCTLRU} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("bpf: %s: %w", name, err)
		}
		err = kernelMap[tcCtKey, tcCtVal]{m}.Each(fn)
		m.Close()
		if err != nil {
			return fmt.Errorf("bpf: %w", err)
		}
	}
	return nil
}

// live: a flow's forward entry, not expired, not closed or reset.
func live(v tcCtVal, now uint64) bool {
	return v.IsReply == 0 && !dead(v, now) && v.Closed == 0 && v.Rst == 0
}

// conntrackCreator is the part of *netlink.Handle HoldFlowPorts writes conntrack with.
type conntrackCreator interface {
	ConntrackCreate(table netlink.ConntrackTableType, family netlink.InetFamily, flow *netlink.ConntrackFlow) error
}

// HoldFlowPorts writes, for every live masqueraded flow in the maps pinned in pinDir, a conntrack
// entry with that flow's translated tuples, expiring after ttl. The programs forward their flows
// past the stack, so conntrack never saw them; while draining, kube-proxy's masquerade takes the new
// connections and, not knowing a flow's port, may give one the same port towards the same
// backend, whose replies the programs would then take for their flow's. The entry makes conntrack
// see the port as taken; no packet ever matches it. It returns how many it wrote.
func HoldFlowPorts(pinDir string, ct conntrackCreator, ttl time.Duration) (int, error) {
	now := monotonicNow()
	n := 0
	var errs []error
	err := eachPinnedFlow(pinDir, func(k tcCtKey, v tcCtVal) bool {
		f, ok := heldFlow(k, v, now, ttl)
		if !ok {
			return true
		}
		if err := ct.ConntrackCreate(netlink.ConntrackTable, netlink.InetFamily(f.FamilyType), f); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, err)
			return true
		}
		n++
		return true
	})
	return n, errors.Join(append(errs, err)...)
}

// heldFlow is the conntrack entry that holds a live masqueraded flow's translated tuples: its
// forward entry v (under the client's key k) holds the tuple the backend sees.
func heldFlow(k tcCtKey, v tcCtVal, now uint64, ttl time.Duration) (*netlink.ConntrackFlow, bool) {
	if !live(v, now) || v.Host != 0 || (v.Saddr == k.Saddr && v.Sport == k.Sport) {
		return nil, false
	}
	src, dst := netip.AddrFrom16(v.Saddr).Unmap(), netip.AddrFrom16(v.Daddr).Unmap()
	fam := uint8(unix.AF_INET6)
	if src.Is4() {
		fam = unix.AF_INET
	}
	tuple := func(a, b netip.Addr, ap, bp uint16) netlink.IPTuple {
		return netlink.IPTuple{Protocol: k.Proto, SrcIP: a.AsSlice(), DstIP: b.AsSlice(), SrcPort: ap, DstPort: bp}
	}
	f := &netlink.ConntrackFlow{FamilyType: fam, TimeOut: uint32(ttl.Seconds()),
		Forward: tuple(src, dst, htons(v.Sport), htons(v.Dport)),
		Reverse: tuple(dst, src, htons(v.Dport), htons(v.Sport))}
	if k.Proto == unix.IPPROTO_TCP {
		f.ProtoInfo = &netlink.ProtoInfoTCP{State: nl.TCP_CONNTRACK_ESTABLISHED}
	}
	return f, true
}
