package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// ServiceRules renders the nat chains of one service (its SVC/SVL/EXT/FW/SEP
// chains) for every frontend of cfg.Family in its own desired state,
// st.Services[name]. It reads nothing of other services: a frontend the service
// lost to another still shapes its chains (TopRules just never jumps to them for
// that frontend), so a collision never changes these chains. Of st it reads the
// node's primary address of the family besides (kube-proxy's source-range exception
// for the node), so a change of that address needs every service rendered again.
// Filter is always empty: a service's filter rules (REJECT, DROP, source ranges)
// live in the top chains.
func ServiceRules(st *dataplane.State, name dataplane.ServiceName, cfg Config) Rules {
	r := Rules{NAT: Chains{}, Filter: Chains{}}
	ss := st.Services[name]
	if ss == nil {
		return r
	}
	fs := make([]*dataplane.FrontendState, 0, len(ss.Frontends))
	for i := range ss.Frontends {
		if dataplane.FamilyOf(ss.Frontends[i].Addr) == cfg.Family {
			fs = append(fs, &ss.Frontends[i])
		}
	}
	nodeIP, _ := primaryIP(st.Node, cfg.Family)
	for _, v := range portViews(fs) {
		v.writeChains(r.NAT, cfg, nodeIP)
	}
	return r
}

// writeChains is the per-service-port half of kube-proxy's syncProxyRules loop.
func (v *portView) writeChains(nat Chains, cfg Config, nodeIP netip.Addr) {
	cluster := endpointInfos(v, v.clusterEndpoints())
	local := endpointInfos(v, v.localEndpoints())
	if len(cluster) > 0 {
		nat.declare(v.chains.svc)
	}
	if len(local) > 0 {
		nat.declare(v.chains.svl)
	}
	v.writeInternalMasquerade(nat, cfg)
	v.writeExt(nat, cfg)
	v.writeFW(nat, nodeIP)
	affinity := int(v.first().Affinity / time.Second)
	v.writeEndpointRules(nat, v.chains.svc, cluster, affinity, cfg)
	v.writeEndpointRules(nat, v.chains.svl, local, affinity, cfg)
	for _, ep := range slices.Concat(cluster, local) {
		if _, done := nat[ep.chain]; !done { // an endpoint can be in both lists
			v.writeEndpointChain(nat, ep, affinity > 0, cfg)
		}
	}
}

// writeInternalMasquerade: ClusterIP traffic that may bounce off the node (not from a
// pod; everything with --masquerade-all) is masqueraded, first thing in the chain
// the ClusterIP jumps to.
func (v *portView) writeInternalMasquerade(nat Chains, cfg Config) {
	f := v.clusterIP
	if f == nil || f.Pod.Verdict != dataplane.Forward {
		return
	}
	chain := v.internalChain()
	if _, ok := nat[chain]; !ok {
		return // never jumped to
	}
	match := flat(netfilter.Comment(v.name+" cluster IP"), protoArgs(v.proto), dst(f.Addr), dport(f.Port))
	if cfg.MasqueradeAll {
		nat.add(chain, match, jump(ChainMarkMasq))
	} else if cidr, ok := cfg.detector(); ok {
		nat.add(chain, match, args("!", "-s", cidr.String()), jump(ChainMarkMasq))
	}
}

// writeExt: every external frontend (NodePort, externalIP, LB IP) goes through EXT.
// Under the Cluster policy it masquerades everything, as the endpoint may be on
// another node. Under the Local policy, pods and the node itself are sent to all
// endpoints as if they had gone out to a load balancer and come back (the node
// masqueraded: its source would be the LB IP), everyone else to local endpoints
// only, with their address kept.
func (v *portView) writeExt(nat Chains, cfg Config) {
	e := v.ext()
	if e == nil || !hasEndpoints(e) {
		return
	}
	ext := v.chains.ext
	nat.declare(ext)
	_, hasSVC := nat[v.chains.svc]
	if !e.ExternalTrafficLocal {
		nat.add(ext, netfilter.Comment("masquerade traffic for "+v.name+" external destinations"), jump(ChainMarkMasq))
	} else {
		if cidr, ok := cfg.detector(); ok && hasSVC {
			nat.add(ext, netfilter.Comment("pod traffic for "+v.name+" external destinations"), args("-s", cidr.String()), jump(v.chains.svc))
		}
		localSrc := args("-m", "addrtype", "--src-type", "LOCAL")
		nat.add(ext, netfilter.Comment("masquerade LOCAL traffic for "+v.name+" external destinations"), localSrc, jump(ChainMarkMasq))
		if hasSVC {
			nat.add(ext, netfilter.Comment("route LOCAL traffic for "+v.name+" external destinations"), localSrc, jump(v.chains.svc))
		}
	}
	if _, ok := nat[v.externalPolicyChain()]; ok && e.Outside.Verdict == dataplane.Forward {
		nat.add(ext, jump(v.externalPolicyChain()))
	}
}

// writeFW: loadBalancerSourceRanges. Allowed sources go on to EXT; the rest fall off
// the end un-DNATed, and SWYD-PROXY-FIREWALL (filter) drops them because their
// destination is still the LB IP.
func (v *portView) writeFW(nat Chains, nodeIP netip.Addr) {
	if !v.usesFW() {
		return
	}
	fw := v.chains.fw
	nat.declare(fw)
	c := netfilter.Comment(v.name + " loadbalancer IP")
	fromNode := false
	for _, p := range v.sourceRanges() {
		nat.add(fw, c, args("-s", p.String()), jump(v.chains.ext))
		fromNode = fromNode || (nodeIP.IsValid() && p.Contains(nodeIP))
	}
	// An LB IP is often also a local address, so the node reaching it loops back with
	// the LB IP as its source: let it in when the node itself is allowed.
	if fromNode {
		for _, f := range v.lbIPs {
			nat.add(fw, c, args("-s", f.Addr.String()), jump(v.chains.ext))
		}
	}
	nat.add(fw, netfilter.Comment("other traffic to "+v.name+" will be dropped by "+ChainProxyFirewall))
}

// endpointInfo is an endpoint with its kube-proxy string ("ip:port") and SEP chain.
type endpointInfo struct {
	addr  netip.Addr
	str   string
	chain string
}

// endpointInfos orders endpoints as kube-proxy does (by "ip:port" string), which
// decides which endpoint gets which probability.
func endpointInfos(v *portView, eps []dataplane.Endpoint) []endpointInfo {
	out := make([]endpointInfo, 0, len(eps))
	for _, ep := range eps {
		s := ep.AddrPort().String()
		out = append(out, endpointInfo{addr: ep.Addr, str: s, chain: endpointChain(v.name, v.proto, s)})
	}
	slices.SortFunc(out, func(a, b endpointInfo) int { return strings.Compare(a.str, b.str) })
	return out
}

// writeEndpointRules is kube-proxy's writeServiceToEndpointRules: first the affinity
// checks (a client seen within the timeout goes back to its endpoint), then a
// uniform random choice: rule i of n matches with probability 1/(n-i), the last
// always.
func (v *portView) writeEndpointRules(nat Chains, chain string, eps []endpointInfo, affinity int, cfg Config) {
	if len(eps) == 0 {
		return
	}
	if affinity > 0 {
		for _, ep := range eps {
			nat.add(chain, v.endpointComment(ep, cfg),
				args("-m", "recent", "--name", ep.chain, "--rcheck", "--seconds", strconv.Itoa(affinity), "--reap"), jump(ep.chain))
		}
	}
	for i, ep := range eps {
		var random []string
		if i < len(eps)-1 {
			random = args("-m", "statistic", "--mode", "random", "--probability", probability(len(eps)-i))
		}
		nat.add(chain, v.endpointComment(ep, cfg), random, jump(ep.chain))
	}
}

func (v *portView) endpointComment(ep endpointInfo, cfg Config) []string {
	if cfg.LargeCluster {
		return nil
	}
	return netfilter.Comment(v.name + " -> " + ep.str)
}

// writeEndpointChain: the endpoint reaching itself through the service (hairpin) is
// masqueraded, or its reply would not come back through the NAT; affinity records
// the client; then DNAT.
func (v *portView) writeEndpointChain(nat Chains, ep endpointInfo, affinity bool, cfg Config) {
	var c []string
	if !cfg.LargeCluster {
		c = netfilter.Comment(v.name)
	}
	nat.declare(ep.chain)
	nat.add(ep.chain, c, args("-s", ep.addr.String()), jump(ChainMarkMasq))
	var recent []string
	if affinity {
		recent = args("-m", "recent", "--name", ep.chain, "--set")
	}
	nat.add(ep.chain, c, recent, protoArgs(v.proto), jump("DNAT"), args("--to-destination", ep.str))
}

// probabilities are kube-proxy's computeProbability strings, precomputed as it does:
// formatting floats is the expensive part of a rule.
var probabilities = sync.OnceValue(func() []string {
	p := make([]string, 1001)
	for n := 1; n < len(p); n++ {
		p[n] = formatProbability(n)
	}
	return p
})

func probability(n int) string {
	if p := probabilities(); n < len(p) {
		return p[n]
	}
	return formatProbability(n)
}

func formatProbability(n int) string { return fmt.Sprintf("%0.10f", 1.0/float64(n)) }
