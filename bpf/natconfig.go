package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/switchyard/switchyard/dataplane"
)

// natConfig keeps the tc programs' node-level settings: the masquerade address
// of each family, the masquerade ports and the cluster CIDRs.
type natConfig struct {
	snat  Map[uint32, tcSnatAddr]
	ports Map[uint32, tcSnatPorts]
	cidrs Map[tcCidrKey, uint8]
	// nodePorts is --node-port-range: no masquerade port is taken from it.
	nodePorts dataplane.PortRange

	mu      sync.Mutex
	written [2]netip.Addr // what the kernel holds, by family index
	known   bool
}

// setNodeIPs makes the node's primary address of each family the masquerade
// address (kube-proxy's MASQUERADE picks the outgoing device's address; on a
// node that is the node IP). force rewrites what is cached (full syncs).
func (n *natConfig) setNodeIPs(ips []netip.Addr, force bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var want [2]netip.Addr
	for _, ip := range ips {
		i := familyIndex(ip)
		if !want[i].IsValid() {
			want[i] = ip
		}
	}
	if n.known && !force && want == n.written {
		return nil
	}
	var errs []error
	for i, a := range want {
		var v tcSnatAddr
		if a.IsValid() {
			v.Addr = addr16(a)
		}
		if err := n.snat.Put(uint32(i), v); err != nil {
			errs = append(errs, fmt.Errorf("masquerade address %v: %w", a, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		n.known = false
		return err
	}
	n.written, n.known = want, true
	return nil
}

func newNATConfig(t *tcOwn, nodePorts dataplane.PortRange) *natConfig {
	return &natConfig{snat: NewKernelMap[uint32, tcSnatAddr](t.SNATAddrs), ports: NewKernelMap[uint32, tcSnatPorts](t.SNATPorts),
		cidrs: NewKernelMap[tcCidrKey, uint8](t.ClusterCIDRs), nodePorts: nodePorts}
}

func familyIndex(a netip.Addr) int {
	if dataplane.FamilyOf(a) == dataplane.IPv6 {
		return 1
	}
	return 0
}

// setClusterCIDRs makes the trie hold exactly cidrs (an earlier agent may have
// had other flags).
func (n *natConfig) setClusterCIDRs(cidrs []netip.Prefix) error {
	have, err := n.cidrs.All()
	if err != nil {
		return err
	}
	want := map[tcCidrKey]bool{}
	for _, p := range cidrs {
		want[cidrKey(p)] = true
	}
	var errs []error
	for k := range want {
		if _, ok := have[k]; !ok {
			errs = append(errs, n.cidrs.Put(k, 1))
		}
	}
	for k := range have {
		if !want[k] {
			errs = append(errs, n.cidrs.Delete(k))
		}
	}
	return errors.Join(errs...)
}

func cidrKey(p netip.Prefix) tcCidrKey {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return tcCidrKey{Prefixlen: uint32(bits), Addr: addr16(p.Addr())}
}

// portSpan is the ports first..last.
type portSpan struct{ first, last uint32 }

// snatPortsFor is what the tc programs draw masquerade ports from: 1024-65535
// without cut, the NodePort range. A pod's unconnected UDP reply to the node address
// and a NodePort would be translated by the socket hooks as a connection to that
// NodePort; a port below 1024 looks like a privileged client to some servers.
// The node's ephemeral ports are in: a connection of the node's own that gets a
// port a masqueraded flow holds is moved to another one on the wire (tc.c's
// host_flow), as conntrack does.
func snatPortsFor(cut portSpan) tcSnatPorts {
	all := portSpan{1024, 65535}
	left := []portSpan{all}
	if cut.first <= cut.last && cut.last >= all.first && cut.first <= all.last {
		left = nil
		if cut.first > all.first {
			left = append(left, portSpan{all.first, cut.first - 1})
		}
		if cut.last < all.last {
			left = append(left, portSpan{cut.last + 1, all.last})
		}
	}
	var p tcSnatPorts // at most two spans
	for i, s := range left {
		p.Min[i], p.Span[i] = s.first, s.last-s.first+1
	}
	return p
}

func (p tcSnatPorts) count() uint32 {
	var n uint32
	for _, s := range p.Span {
		n += s
	}
	return n
}

// setPortRange gives the tc programs the masquerade ports left by the NodePort range.
func (n *natConfig) setPortRange() error {
	np := portSpan{1, 0} // none
	if r := n.nodePorts; r.Size > 0 {
		np = portSpan{uint32(r.Base), uint32(r.Base + r.Size - 1)}
	}
	p := snatPortsFor(np)
	if p.count() == 0 {
		return fmt.Errorf("no masquerade ports: the NodePort range %v leaves none of 1024-65535", n.nodePorts)
	}
	if err := n.ports.Put(0, p); err != nil {
		return fmt.Errorf("masquerade ports: %w", err)
	}
	return nil
}
