package iptables

import (
	"net/netip"
	"slices"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// TopRules renders the chains that dispatch to every service (kube-proxy's
// KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES, KUBE-PROXY-FIREWALL,
// KUBE-FORWARD, KUBE-POSTROUTING, KUBE-MARK-MASQ and its KUBE-FIREWALL copy) over
// the frontends of cfg.Family that st.Frontends gives to their owners: a frontend a
// service lost to another is not dispatched to that service.
func TopRules(st *dataplane.State, cfg Config) Rules {
	r := Rules{NAT: Chains{}, Filter: Chains{}}
	r.Filter.declare(ChainNodePorts, ChainServices, ChainExternalServices, ChainFirewall, ChainForward, ChainProxyFirewall)
	r.NAT.declare(ChainNodePorts, ChainServices, ChainMarkMasq, ChainPostrouting)
	writeMasquerade(r.NAT, cfg)
	writeLocalnetFirewall(r.Filter, cfg)
	owned := make([]*dataplane.FrontendState, 0, len(st.Frontends))
	for _, f := range st.Frontends {
		if dataplane.FamilyOf(f.Addr) == cfg.Family {
			owned = append(owned, f)
		}
	}
	for _, v := range portViews(owned) {
		v.writeDispatch(r)
	}
	writeNodePortsJump(r.NAT, st.Node, cfg)
	writeForward(r.Filter, cfg)
	return r
}

// writeMasquerade: SWYD-MARK-MASQ marks, SWYD-POSTROUTING masquerades what is marked
// and clears the mark so a packet that goes through the stack again is not
// masqueraded twice.
func writeMasquerade(nat Chains, cfg Config) {
	mark := cfg.masqMark()
	nat.add(ChainPostrouting, args("-m", "mark", "!", "--mark", mark+"/"+mark), jump("RETURN"))
	nat.add(ChainPostrouting, jump("MARK"), args("--xor-mark", mark))
	nat.add(ChainPostrouting, netfilter.Comment("kubernetes service traffic requiring SNAT"), jump("MASQUERADE"), args("--random-fully"))
	nat.add(ChainMarkMasq, jump("MARK"), args("--or-mark", mark))
}

// writeLocalnetFirewall closes the hole route_localnet opens (kubernetes#90259):
// nothing from off the node may reach 127.0.0.0/8 unless it was DNATed there.
func writeLocalnetFirewall(filter Chains, cfg Config) {
	if !cfg.LocalhostNodePortsEnabled() {
		return
	}
	filter.add(ChainFirewall, netfilter.Comment("block incoming localnet connections"),
		args("-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT"),
		jump("DROP"))
}

// writeNodePortsJump is SWYD-SERVICES' last rule: what no service IP matched may be
// a NodePort if it is addressed to the node.
func writeNodePortsJump(nat Chains, node dataplane.NodeInfo, cfg Config) {
	note := netfilter.Comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
	all, ips := nodePortDestinations(node, cfg)
	if all {
		dest := args("-m", "addrtype", "--dst-type", "LOCAL")
		switch {
		case cfg.Family == dataplane.IPv6:
			dest = append(dest, "!", "-d", "::1/128")
		case !cfg.LocalhostNodePortsEnabled():
			dest = append(dest, "!", "-d", "127.0.0.0/8")
		}
		nat.add(ChainServices, note, dest, jump(ChainNodePorts))
		return
	}
	for _, ip := range ips {
		nat.add(ChainServices, note, dst(ip), jump(ChainNodePorts))
	}
}

// nodePortDestinations says where NodePorts answer: every local address (kube-proxy's
// MatchAll), or the node's addresses inside --nodeport-addresses. kube-proxy takes
// the latter from the interfaces; the model takes them from the Node object, and so
// does this, to agree with the NodePort frontends.
func nodePortDestinations(node dataplane.NodeInfo, cfg Config) (all bool, ips []netip.Addr) {
	if cfg.NodePortAddresses.Primary {
		ip, ok := primaryIP(node, cfg.Family)
		if !ok {
			return true, nil // kube-proxy: "primary" adds no CIDR of a family without a node IP
		}
		return false, []netip.Addr{ip}
	}
	all, cidrs := cfg.nodePortCIDRs()
	if all {
		return true, nil
	}
	for _, ip := range node.IPs {
		if dataplane.FamilyOf(ip) == cfg.Family && !ip.IsLoopback() && slices.ContainsFunc(cidrs, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			ips = append(ips, ip)
		}
	}
	if cfg.LocalhostNodePortsEnabled() {
		ips = append(ips, netip.MustParseAddr("127.0.0.1"))
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return false, slices.Compact(ips)
}

// primaryIP is kube-proxy's node IP of a family: the first the Node lists.
func primaryIP(node dataplane.NodeInfo, f dataplane.Family) (netip.Addr, bool) {
	for _, ip := range node.IPs {
		if dataplane.FamilyOf(ip) == f {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// writeForward lets NodePort traffic through a FORWARD policy that is not ACCEPT:
// marked packets and what conntrack knows; and drops INVALID ones, which would
// otherwise reach a pod un-NATed and draw a reset (kubernetes#74839).
func writeForward(filter Chains, cfg Config) {
	mark := cfg.masqMark()
	if !cfg.ConntrackTCPLiberal {
		filter.add(ChainForward, args("-m", "conntrack", "--ctstate", "INVALID"), jump("DROP"))
	}
	filter.add(ChainForward, netfilter.Comment("kubernetes forwarding rules"), args("-m", "mark", "--mark", mark+"/"+mark), jump("ACCEPT"))
	filter.add(ChainForward, netfilter.Comment("kubernetes forwarding conntrack rule"), args("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"), jump("ACCEPT"))
}

// writeDispatch writes one service port's rules in the top chains: jumps to its
// chains in nat, and in filter its REJECT (no endpoints at all), DROP (none for
// this traffic under a Local policy) and source-range rules.
func (v *portView) writeDispatch(r Rules) {
	name, proto := v.name, v.proto
	if f := v.clusterIP; f != nil {
		where := flat(protoArgs(proto), dst(f.Addr), dport(f.Port))
		if f.Pod.Verdict == dataplane.Forward {
			r.NAT.add(ChainServices, netfilter.Comment(name+" cluster IP"), where, jump(v.internalChain()))
		} else {
			r.Filter.add(ChainServices, netfilter.Comment(v.filterComment(f.Pod.Verdict)), where, jump(filterTarget(f.Pod.Verdict)))
		}
	}
	for _, f := range v.externalIPs {
		v.writeExternal(r, f, "external IP", v.chains.ext)
	}
	lbTarget := v.chains.ext
	if v.usesFW() {
		lbTarget = v.chains.fw
		for _, f := range v.lbIPs {
			r.Filter.add(ChainProxyFirewall, netfilter.Comment(name+" traffic not accepted by "+v.chains.fw),
				protoArgs(proto), dst(f.Addr), dport(f.Port), jump("DROP"))
		}
	}
	for _, f := range v.lbIPs {
		v.writeExternal(r, f, "loadbalancer IP", lbTarget)
	}
	if len(v.nodePorts) > 0 {
		f := v.nodePorts[0] // every NodePort frontend of a port has the same port
		if hasEndpoints(f) {
			r.NAT.add(ChainNodePorts, netfilter.Comment(name), protoArgs(proto), dport(f.Port), jump(v.chains.ext))
		}
		if f.Outside.Verdict != dataplane.Forward {
			r.Filter.add(ChainExternalServices, netfilter.Comment(v.filterComment(f.Outside.Verdict)),
				args("-m", "addrtype", "--dst-type", "LOCAL"), protoArgs(proto), dport(f.Port), jump(filterTarget(f.Outside.Verdict)))
		}
	}
	if hc := v.first().HealthCheckNodePort; hc != 0 {
		r.Filter.add(ChainNodePorts, netfilter.Comment(name+" health check node port"), protoArgs("tcp"), dport(hc), jump("ACCEPT"))
	}
}

// writeExternal dispatches an externalIP or LoadBalancer IP: to the service's chain
// when it has endpoints anywhere (pods and the node may use them even under a Local
// policy), and in filter REJECT or DROP what outside traffic cannot use.
func (v *portView) writeExternal(r Rules, f *dataplane.FrontendState, what, target string) {
	where := flat(protoArgs(v.proto), dst(f.Addr), dport(f.Port))
	if hasEndpoints(f) {
		r.NAT.add(ChainServices, netfilter.Comment(v.name+" "+what), where, jump(target))
	}
	if f.Outside.Verdict != dataplane.Forward {
		r.Filter.add(ChainExternalServices, netfilter.Comment(v.filterComment(f.Outside.Verdict)), where, jump(filterTarget(f.Outside.Verdict)))
	}
}

func (v *portView) filterComment(verdict dataplane.Verdict) string {
	if verdict == dataplane.Reject {
		return v.name + " has no endpoints"
	}
	return v.name + " has no local endpoints"
}

// filterTarget: a service without any endpoint refuses (REJECT); one whose endpoints
// this traffic may not use (a Local policy) drops.
func filterTarget(verdict dataplane.Verdict) string {
	if verdict == dataplane.Reject {
		return "REJECT"
	}
	return "DROP"
}
