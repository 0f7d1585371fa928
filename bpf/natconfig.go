package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/switchyard/switchyard/dataplane"
)

// natConfig keeps the tc programs' node-level settings: the masquerade address
// of each family, the masquerade ports and the cluster CIDRs.
type natConfig struct {
	snat  Map[uint32, tcSnatAddr]
	ports Map[uint32, tcSnatPorts]
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

func newNATConfig(t *tcOwn) *natConfig {
	return &natConfig{snat: NewKernelMap[uint32, tcSnatAddr](t.SNATAddrs), ports: NewKernelMap[uint32, tcSnatPorts](t.SNATPorts),
		cidrs: NewKernelMap[tcCidrKey, uint8](t.ClusterCIDRs)}
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

// localPortRange is where the node's own sockets get their ports when they do
// not choose one (connect(), bind to port 0): the masquerade ports stay out of it.
const localPortRange = "/proc/sys/net/ipv4/ip_local_port_range"

// snatPortsFor is what the tc programs draw masquerade ports from: 1024-65535
// without the node's ephemeral range lo-hi. A port the node's own connection gets
// later could collide with a masqueraded flow that no lookup saw coming; a port
// below 1024 looks like a privileged client to some servers.
func snatPortsFor(lo, hi uint16) tcSnatPorts {
	const first, last = 1024, 65535
	var p tcSnatPorts
	if lo > first {
		p.LowMin, p.LowSpan = first, uint32(lo)-first
	}
	if hi < last {
		p.HighMin = max(uint32(hi)+1, first)
		p.HighSpan = last + 1 - p.HighMin
	}
	return p
}

// parsePortRange reads ip_local_port_range's "lo hi".
func parsePortRange(s string) (lo, hi uint16, err error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("%s: want two ports, got %q", localPortRange, s)
	}
	l, err1 := strconv.ParseUint(f[0], 10, 16)
	h, err2 := strconv.ParseUint(f[1], 10, 16)
	if err := errors.Join(err1, err2); err != nil || l > h {
		return 0, 0, fmt.Errorf("%s: bad range %q", localPortRange, s)
	}
	return uint16(l), uint16(h), nil
}

// setPortRange gives the tc programs the masquerade ports for the node's current
// ip_local_port_range (read in the calling thread's network namespace).
func (n *natConfig) setPortRange() error {
	b, err := os.ReadFile(localPortRange)
	if err != nil {
		return err
	}
	lo, hi, err := parsePortRange(string(b))
	if err != nil {
		return err
	}
	p := snatPortsFor(lo, hi)
	if p.LowSpan+p.HighSpan == 0 {
		return fmt.Errorf("no masquerade ports: %s %d-%d leaves none of 1024-65535", localPortRange, lo, hi)
	}
	if err := n.ports.Put(0, p); err != nil {
		return fmt.Errorf("masquerade ports: %w", err)
	}
	return nil
}
