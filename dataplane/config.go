package dataplane

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Config is the part of the agent's configuration that shapes the desired state.
type Config struct {
	// NodeName is this node's name (--hostname-override or the host name).
	NodeName string
	// ClusterCIDRs is the local-traffic detector (--cluster-cidr): sources inside
	// it are pods. Empty: no detector, as in kube-proxy.
	ClusterCIDRs []netip.Prefix
	// NodePortAddresses selects the node addresses NodePorts listen on.
	NodePortAddresses NodePortAddresses
	// LocalhostNodePorts also serves NodePorts on 127.0.0.1 (IPv4 only), when the
	// node-port addresses include the IPv4 loopback.
	LocalhostNodePorts bool
	// MasqueradeAll SNATs all traffic to ClusterIPs.
	MasqueradeAll bool
	// NodePortRange is the range NodePorts must fall in to be programmed.
	NodePortRange PortRange
}

// DefaultConfig returns kube-proxy's defaults.
func DefaultConfig() Config {
	return Config{LocalhostNodePorts: true, NodePortRange: PortRange{Base: 30000, Size: 2768}}
}

// NodePortAddresses is kube-proxy's --nodeport-addresses: CIDRs, or "primary".
// The zero value means all node addresses.
type NodePortAddresses struct {
	Primary bool
	CIDRs   []netip.Prefix
}

// ParseNodePortAddresses parses the flag's values.
func ParseNodePortAddresses(values []string) (NodePortAddresses, error) {
	var n NodePortAddresses
	for _, v := range values {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if v == "primary" {
			n.Primary = true
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return n, fmt.Errorf("invalid node port address %q: want a CIDR or \"primary\"", v)
		}
		n.CIDRs = append(n.CIDRs, p.Masked())
	}
	if n.Primary && len(n.CIDRs) > 0 {
		return n, fmt.Errorf("\"primary\" cannot be combined with CIDRs")
	}
	return n, nil
}

// All reports whether every node address is selected.
func (n NodePortAddresses) All() bool { return !n.Primary && len(n.CIDRs) == 0 }

// cidrsOf are the CIDRs of family f. kube-proxy reads the flag per family: a
// family without CIDRs gets every address (0.0.0.0/0 or ::/0).
func (n NodePortAddresses) cidrsOf(f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range n.CIDRs {
		if FamilyOf(c.Addr()) == f {
			out = append(out, c)
		}
	}
	return out
}

// allOf reports whether every node address of family f is selected.
func (n NodePortAddresses) allOf(f Family) bool { return !n.Primary && len(n.cidrsOf(f)) == 0 }

// containsIPv4Loopback mirrors kube-proxy: localhost NodePorts only exist when the
// selection could include 127.0.0.1.
func (n NodePortAddresses) containsIPv4Loopback() bool {
	if n.allOf(IPv4) {
		return true
	}
	lo := netip.MustParseAddr("127.0.0.1")
	for _, c := range n.cidrsOf(IPv4) {
		if c.Contains(lo) {
			return true
		}
	}
	return false
}

// PortRange is an inclusive range of ports written "base-last" (or one port).
type PortRange struct {
	Base, Size int
}

// ParsePortRange parses "30000-32767" or "30000+2767" or a single port.
func ParsePortRange(s string) (PortRange, error) {
	s = strings.TrimSpace(s)
	bad := fmt.Errorf("invalid port range %q: want FIRST-LAST, e.g. 30000-32767", s)
	var lo, hi int
	var err error
	switch {
	case strings.Contains(s, "-"):
		a, b, _ := strings.Cut(s, "-")
		if lo, err = strconv.Atoi(a); err != nil {
			return PortRange{}, bad
		}
		if hi, err = strconv.Atoi(b); err != nil {
			return PortRange{}, bad
		}
	case strings.Contains(s, "+"):
		a, b, _ := strings.Cut(s, "+")
		var off int
		if lo, err = strconv.Atoi(a); err != nil {
			return PortRange{}, bad
		}
		if off, err = strconv.Atoi(b); err != nil || off < 0 {
			return PortRange{}, bad
		}
		hi = lo + off
	default:
		if lo, err = strconv.Atoi(s); err != nil {
			return PortRange{}, bad
		}
		hi = lo
	}
	if lo < 1 || hi > 65535 || lo > hi {
		return PortRange{}, bad
	}
	return PortRange{Base: lo, Size: hi - lo + 1}, nil
}

func (r PortRange) Contains(port int) bool { return port >= r.Base && port < r.Base+r.Size }
func (r PortRange) Last() int              { return r.Base + r.Size - 1 }
func (r PortRange) String() string         { return fmt.Sprintf("%d-%d", r.Base, r.Last()) }
