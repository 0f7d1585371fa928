// Package iptables is Switchyard's iptables dataplane: kube-proxy's iptables mode
// (v1.37), rendered from the backend-neutral desired state. This part is the pure
// function from a dataplane.State to the rules; executing them is sync.go's job,
// through the netfilter package's Restorer.
package iptables

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// Chains maps a chain name to its rules, each a complete iptables-restore line
// ("-A NAME ..."). A chain without rules is present with an empty list: it must still
// be declared (and so flushed).
type Chains map[string][]string

// Rules are the chains Switchyard owns in the nat and filter tables of one family.
type Rules struct{ NAT, Filter Chains }

// Config is what shapes the rules beyond the desired state.
type Config struct {
	Family dataplane.Family
	// ClusterCIDRs of this family (--cluster-cidr). As in kube-proxy, the first one
	// is the local-traffic detector; empty: no detector.
	ClusterCIDRs []netip.Prefix
	// MasqueradeAll masquerades all ClusterIP traffic (--masquerade-all).
	MasqueradeAll bool
	// MasqueradeBit is kube-proxy's --iptables-masquerade-bit (default 14: mark
	// 0x00004000/0x00004000). 0 is a valid bit, so start from DefaultConfig.
	MasqueradeBit int
	// LocalhostNodePorts is the flag (--iptables-localhost-nodeports); it takes
	// effect as LocalhostNodePortsEnabled says.
	LocalhostNodePorts bool
	// NodePortAddresses is --nodeport-addresses.
	NodePortAddresses dataplane.NodePortAddresses
	// ConntrackTCPLiberal: net.netfilter.nf_conntrack_tcp_be_liberal is set, so, as
	// kube-proxy, no rule drops forwarded packets conntrack finds INVALID.
	ConntrackTCPLiberal bool
	// LargeCluster is kube-proxy's large cluster mode (more than 1000 endpoints in
	// all): per-endpoint comments are left out to shrink the restore input. It is a
	// field, not computed, so one service's rules never depend on the others; a
	// backend that flips it must render every service again.
	LargeCluster bool
}

// DefaultConfig returns kube-proxy's defaults for a family.
func DefaultConfig(f dataplane.Family) Config {
	return Config{Family: f, MasqueradeBit: 14, LocalhostNodePorts: true}
}

// NewConfig derives a family's Config from the model's configuration, so the rules
// agree with the frontends the model computed.
func NewConfig(f dataplane.Family, model dataplane.Config) Config {
	c := DefaultConfig(f)
	for _, p := range model.ClusterCIDRs {
		if dataplane.FamilyOf(p.Addr()) == f {
			c.ClusterCIDRs = append(c.ClusterCIDRs, p)
		}
	}
	c.MasqueradeAll = model.MasqueradeAll
	c.LocalhostNodePorts = model.LocalhostNodePorts
	c.NodePortAddresses = model.NodePortAddresses
	return c
}

// masqMark is formatted as kube-proxy formats it ("%#08x": 0x00004000).
func (c Config) masqMark() string { return fmt.Sprintf("%#08x", 1<<uint(c.MasqueradeBit)) }

// detector returns the local-traffic detector's CIDR: kube-proxy's
// NewDetectLocalByCIDR takes the first cluster CIDR of the family.
func (c Config) detector() (netip.Prefix, bool) {
	for _, p := range c.ClusterCIDRs {
		if dataplane.FamilyOf(p.Addr()) == c.Family {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// LocalhostNodePortsEnabled reports whether NodePorts answer on 127.0.0.0/8, as
// kube-proxy decides it: IPv4 only, with the flag, and only when the node-port
// addresses can include loopback. The backend sets net.ipv4.conf.all.route_localnet
// exactly then.
func (c Config) LocalhostNodePortsEnabled() bool {
	if c.Family != dataplane.IPv4 || !c.LocalhostNodePorts || c.NodePortAddresses.Primary {
		return false
	}
	all, cidrs := c.nodePortCIDRs()
	if all {
		return true
	}
	lo := netip.MustParseAddr("127.0.0.0")
	for _, p := range cidrs {
		if p.Addr().IsLoopback() || p.Contains(lo) {
			return true
		}
	}
	return false
}

// nodePortCIDRs is kube-proxy's NodePortAddresses for this family: the CIDRs of the
// family, or every address when there is none of it or one is 0.0.0.0/0 (::/0).
func (c Config) nodePortCIDRs() (all bool, cidrs []netip.Prefix) {
	for _, p := range c.NodePortAddresses.CIDRs {
		if dataplane.FamilyOf(p.Addr()) != c.Family {
			continue
		}
		if p.Bits() == 0 {
			return true, nil
		}
		cidrs = append(cidrs, p)
	}
	return len(cidrs) == 0, cidrs
}

// BaseJumps are kube-proxy's iptablesJumpChains and its copy of kubelet's
// KUBE-FIREWALL jumps, in kube-proxy's order. They are the same for every
// configuration (SWYD-FIREWALL is jumped to even when it is empty, as KUBE-FIREWALL
// is), so a cleanup can remove them without knowing the configuration; the Config
// is there for the contract's sake.
func BaseJumps(Config) []netfilter.Jump {
	newOnly := func() []string { return []string{"-m", "conntrack", "--ctstate", "NEW"} }
	const (
		external = "kubernetes externally-visible service portals"
		portals  = "kubernetes service portals"
		fw       = "kubernetes load balancer firewall"
	)
	return []netfilter.Jump{
		{Table: "filter", Chain: "INPUT", Target: ChainExternalServices, Args: newOnly(), Comment: external},
		{Table: "filter", Chain: "FORWARD", Target: ChainExternalServices, Args: newOnly(), Comment: external},
		{Table: "filter", Chain: "INPUT", Target: ChainNodePorts, Comment: "kubernetes health check service ports"},
		{Table: "filter", Chain: "FORWARD", Target: ChainServices, Args: newOnly(), Comment: portals},
		{Table: "filter", Chain: "OUTPUT", Target: ChainServices, Args: newOnly(), Comment: portals},
		{Table: "filter", Chain: "FORWARD", Target: ChainForward, Comment: "kubernetes forwarding rules"},
		{Table: "filter", Chain: "INPUT", Target: ChainProxyFirewall, Args: newOnly(), Comment: fw},
		{Table: "filter", Chain: "OUTPUT", Target: ChainProxyFirewall, Args: newOnly(), Comment: fw},
		{Table: "filter", Chain: "FORWARD", Target: ChainProxyFirewall, Args: newOnly(), Comment: fw},
		{Table: "nat", Chain: "OUTPUT", Target: ChainServices, Comment: portals},
		{Table: "nat", Chain: "PREROUTING", Target: ChainServices, Comment: portals},
		{Table: "nat", Chain: "POSTROUTING", Target: ChainPostrouting, Comment: "kubernetes postrouting rules"},
		{Table: "filter", Chain: "INPUT", Target: ChainFirewall},
		{Table: "filter", Chain: "OUTPUT", Target: ChainFirewall},
	}
}

// add appends "-A chain parts..." to c.
func (c Chains) add(chain string, parts ...[]string) {
	n := len("-A ") + len(chain)
	for _, p := range parts {
		for _, s := range p {
			n += 1 + len(s)
		}
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString("-A ")
	b.WriteString(chain)
	for _, p := range parts {
		for _, s := range p {
			b.WriteByte(' ')
			b.WriteString(s)
		}
	}
	c[chain] = append(c[chain], b.String())
}

// declare makes the chains present even if they stay empty.
func (c Chains) declare(names ...string) {
	for _, n := range names {
		if _, ok := c[n]; !ok {
			c[n] = []string{}
		}
	}
}

func protoArgs(proto string) []string { return []string{"-m", proto, "-p", proto} }
func dst(a netip.Addr) []string       { return []string{"-d", a.String()} }
func dport(p uint16) []string         { return []string{"--dport", strconv.Itoa(int(p))} }
func jump(target string) []string     { return []string{"-j", target} }
func args(s ...string) []string       { return s }

func flat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
