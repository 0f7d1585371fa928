package ipvs

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// tableChain names a chain.
type tableChain struct{ table, chain string }

// frontendRules is what one frontend adds to the iptables rules: lines in the
// set chains, and possibly a chain of its own.
type frontendRules struct {
	// Lines are complete restore lines ("-A CHAIN ...") of the set chains.
	Lines []tableLine
	// Own is the frontend's own filter chain (empty name: none).
	Own      string
	OwnLines []string
}

type tableLine struct{ table, line string }

// chainOf is the chain a rule line is in.
func chainOf(line string) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(line, "-A "), " ")
	return name
}

// renderFrontend renders f's rules for its family. w is its IPVS side (nil: the
// frontend is not programmed, and has no rules). nodeIP is the node's primary
// address of the family (the source-range exception for the node itself).
func renderFrontend(f *dataplane.FrontendState, w *Wanted, o Options, nodeIP netip.Addr) frontendRules {
	var r frontendRules
	if f == nil || w == nil {
		return r
	}
	v := frontendView{f: f, w: w, o: o, proto: strings.ToLower(string(f.Protocol))}
	v.name = portName(f.Service)
	v.where = []string{"-m", v.proto, "-p", v.proto, "-d", f.Addr.String(), "--dport", strconv.Itoa(int(f.Port))}
	v.cidr, v.hasCIDR = detector(o.Model, dataplane.FamilyOf(f.Addr))
	v.masquerade(&r)
	v.hairpin(&r)
	v.filter(&r, nodeIP)
	v.local(&r, nodeIP)
	if hc := f.HealthCheckNodePort; hc != 0 {
		r.add("filter", ChainNodePorts, netfilter.Comment(f.Service.ServiceName.String()+" health check node port"),
			[]string{"-m", "tcp", "-p", "tcp", "--dport", strconv.Itoa(int(hc)), "-j", "ACCEPT"})
	}
	if w.Bind {
		r.add("filter", ChainUnserved, netfilter.Comment("kubernetes ipvs access filter"), []string{"-d", f.Addr.String(), "-j", "REJECT"})
	}
	return r
}

type frontendView struct {
	f       *dataplane.FrontendState
	w       *Wanted
	o       Options
	name    string   // kube-proxy's service port name
	proto   string   // tcp, udp, sctp
	where   []string // matches the frontend's address, protocol and port
	cidr    netip.Prefix
	hasCIDR bool
}

func (r *frontendRules) add(table, chain string, parts ...[]string) {
	line := "-A " + chain
	for _, p := range parts {
		if len(p) > 0 {
			line += " " + strings.Join(p, " ")
		}
	}
	r.Lines = append(r.Lines, tableLine{table, line})
}

// masquerade marks what kube-proxy's IPVS mode masquerades, as the model's
// routes say: ClusterIP traffic from outside the cluster CIDR (everything with
// --masquerade-all; without a detector only the node's own connections, whose
// source is the service address on the device: a remote endpoint's reply to it
// would stay on its own node, which has the address too); everything to an
// external frontend under the Cluster policy; under the Local policy only the
// node's own connections (the model's Host route, which kube-proxy's IPVS mode
// leaves out: with the address on every node's device the reply of an endpoint
// elsewhere would not come back).
func (v *frontendView) masquerade(r *frontendRules) {
	if len(v.w.Dests) == 0 {
		return // nothing is forwarded, so nothing to masquerade
	}
	c := netfilter.Comment(v.name + " " + frontendWord(v.f.Type))
	mark := []string{"-j", ChainMarkMasq}
	switch {
	case v.f.Type == dataplane.ClusterIP && v.o.Model.MasqueradeAll:
		r.add("nat", ChainServices, c, v.where, mark)
	case v.f.Type == dataplane.ClusterIP && v.hasCIDR:
		r.add("nat", ChainServices, c, v.where, []string{"!", "-s", v.cidr.String()}, mark)
	case v.f.Type == dataplane.ClusterIP:
		r.add("nat", ChainServices, c, []string{"-m", v.proto, "-p", v.proto, "-s", v.f.Addr.String(), "--dport", strconv.Itoa(int(v.f.Port))}, mark)
	case !v.f.ExternalTrafficLocal:
		r.add("nat", ChainServices, c, v.where, mark)
	case v.f.Host.Masquerade:
		r.add("nat", ChainServices, c, v.where, []string{"-m", "addrtype", "--src-type", "LOCAL"}, mark)
	}
}

// hairpin: a pod sent to itself through the service would get the reply from
// its own address, not the service's, and drop it: masquerade it (kube-proxy's
// KUBE-LOOP-BACK set). The line is the same for every frontend of the endpoint.
func (v *frontendView) hairpin(r *frontendRules) {
	for i, d := range v.w.Dests {
		if !v.w.Local[i] {
			continue
		}
		r.add("nat", ChainPostrouting, netfilter.Comment("kubernetes service hairpin"),
			[]string{"-m", v.proto, "-p", v.proto, "-s", d.Addr.String(), "-d", d.Addr.String(), "--dport", strconv.Itoa(int(d.Port)), "-j", "MASQUERADE"})
	}
}

// filter is the frontend's rule in ChainFilter, which sees new connections from
// pods and from outside (the node's own connections are translated by IPVS
// before they could loop back into INPUT).
func (v *frontendView) filter(r *frontendRules, nodeIP netip.Addr) {
	f := v.f
	switch {
	case f.Outside.Verdict == dataplane.Reject:
		r.add("filter", ChainFilter, netfilter.Comment(v.name+" has no endpoints"), v.where, []string{"-j", "REJECT"})
		return
	case len(v.w.Dests) == 0: // a Drop verdict for everyone
		r.add("filter", ChainFilter, netfilter.Comment(v.name+" has no local endpoints"), v.where, []string{"-j", "DROP"})
		return
	}
	switch {
	case outsideDropped(f) && !v.hasCIDR:
		// Without a detector pods look like outside clients: nobody is let in.
		r.add("filter", ChainFilter, netfilter.Comment(v.name+" has no local endpoints"), v.where, []string{"-j", "DROP"})
	case outsideDropped(f) || len(sourceRanges(f)) > 0:
		r.Own = prefixFW + netfilter.ChainHash(f.FrontendKey.String())
		for _, l := range v.ownChain(nodeIP) {
			r.OwnLines = append(r.OwnLines, "-A "+r.Own+" "+l)
		}
		// A goto: when the chain returns, the packet goes back to INPUT and skips
		// ChainUnserved.
		r.add("filter", ChainFilter, netfilter.Comment(v.name+" "+frontendWord(f.Type)), v.where, []string{"-g", r.Own})
	case v.w.Bind:
		r.add("filter", ChainFilter, netfilter.Comment(v.name+" "+frontendWord(f.Type)), v.where, []string{"-j", "RETURN"})
	}
}

// ownChain lists the rules (without "-A CHAIN") of the frontend's own chain: a
// Local policy without local endpoints lets only pods in (when a detector says
// which sources are pods), then loadBalancerSourceRanges let only their sources
// in (and the node itself when it is in a range: its connection to an address
// of its own comes from that address).
func (v *frontendView) ownChain(nodeIP netip.Addr) []string {
	var out []string
	if outsideDropped(v.f) {
		out = append(out, "! -s "+v.cidr.String()+" -j DROP")
	}
	ranges := sourceRanges(v.f)
	if len(ranges) == 0 {
		return out // falling off the end returns
	}
	fromNode := false
	for _, p := range ranges {
		out = append(out, "-s "+p.String()+" -j RETURN")
		fromNode = fromNode || (nodeIP.IsValid() && p.Contains(nodeIP))
	}
	if fromNode {
		out = append(out, "-s "+v.f.Addr.String()+" -j RETURN")
	}
	return append(out, "-j DROP")
}

// local is the frontend's rule in ChainLocal (mangle OUTPUT), for the node's own
// connections, which IPVS translates in OUTPUT before the filter table sees
// them: DROP where the model's Host route drops, and where source ranges leave
// the node out (kube-proxy's KUBE-IPVS-OUT-FILTER). A Reject needs nothing
// here: IPVS refuses the connection itself, the service having no destination.
func (v *frontendView) local(r *frontendRules, nodeIP netip.Addr) {
	f := v.f
	switch {
	case f.Host.Verdict == dataplane.Drop:
		r.add("mangle", ChainLocal, netfilter.Comment(v.name+" has no local endpoints"), v.where, []string{"-j", "DROP"})
	case f.Host.Verdict == dataplane.Forward && len(sourceRanges(f)) > 0 && !slices.ContainsFunc(sourceRanges(f), func(p netip.Prefix) bool {
		return nodeIP.IsValid() && p.Contains(nodeIP)
	}):
		r.add("mangle", ChainLocal, netfilter.Comment(v.name+" traffic not accepted by loadBalancerSourceRanges"), v.where, []string{"-j", "DROP"})
	}
}

// sourceRanges are the LoadBalancer source ranges; one that is 0.0.0.0/0 (::/0)
// lets everyone in, so there are none.
func sourceRanges(f *dataplane.FrontendState) []netip.Prefix {
	if f.Type != dataplane.LoadBalancerIP || slices.ContainsFunc(f.SourceRanges, func(p netip.Prefix) bool { return p.Bits() == 0 }) {
		return nil
	}
	return f.SourceRanges
}

// detector is kube-proxy's local-traffic detector: the first cluster CIDR of
// the family.
func detector(c dataplane.Config, f dataplane.Family) (netip.Prefix, bool) {
	for _, p := range c.ClusterCIDRs {
		if dataplane.FamilyOf(p.Addr()) == f {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func frontendWord(t dataplane.FrontendType) string {
	switch t {
	case dataplane.ClusterIP:
		return "cluster IP"
	case dataplane.NodePort:
		return "node port"
	case dataplane.ExternalIP:
		return "external IP"
	}
	return "loadbalancer IP"
}

// portName is kube-proxy's ServicePortName.String().
func portName(sp dataplane.ServicePort) string {
	s := sp.Namespace + "/" + sp.Name
	if sp.Port != "" {
		s += ":" + sp.Port
	}
	return s
}
