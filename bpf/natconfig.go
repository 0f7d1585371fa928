package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/switchyard/switchyard/dataplane"
)

// natConfig keeps the tc programs' node-level settings: the masquerade address
// of each family and the cluster CIDRs.
type natConfig struct {
	snat  Map[uint32, tcSnatAddr]
	cidrs Map[tcCidrKey, uint8]

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
