package iptables

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/switchyard/switchyard/dataplane"
)

// portView is one service port as kube-proxy's syncProxyRules sees it (its
// servicePortInfo plus CategorizeEndpoints' results), rebuilt from the model's
// frontends of that port.
//
// The mapping from the model to kube-proxy's chains. The model computes, per
// frontend, the route of each class of client; kube-proxy computes, per service
// port, two endpoint lists and lets the chain structure pick between them. Every
// frontend of one port comes from the same categorisation in the model, so:
//
//   - hasEndpoints (any usable endpoint anywhere) is "not REJECT": any route of any
//     frontend has Verdict Reject exactly when there is none.
//   - cluster endpoints (the SVC chain) are what the node itself gets on an external
//     frontend (Host: the Cluster policy's endpoints whatever the external policy,
//     the EXT chain's "route LOCAL traffic" short-circuit), or, on a port without
//     external frontends, what any client gets on the ClusterIP under
//     internalTrafficPolicy Cluster. Under internalTrafficPolicy Local without
//     external frontends the port has no cluster endpoints, as in kube-proxy.
//   - local endpoints (the SVL chain) are the ClusterIP's under
//     internalTrafficPolicy Local, or an external frontend's Outside route under
//     externalTrafficPolicy Local.
//   - the ClusterIP's verdict picks its dispatch: Forward jumps to the internal
//     chain (SVL under internalTrafficPolicy Local, else SVC); Reject and Drop become
//     filter REJECT ("has no endpoints") and DROP ("has no local endpoints").
//   - an external frontend's Outside verdict is the same for outside traffic: not
//     Forward adds the filter REJECT/DROP; traffic from pods and the node is still
//     sent to EXT whenever hasEndpoints, whose short-circuits give them the Host
//     and Pod routes.
//   - Masquerade follows kube-proxy's rules rather than the routes' flags (the
//     detector's CIDR is needed for "! -s CIDR" anyway): EXT marks everything under
//     the Cluster policy and LOCAL sources under the Local policy; the internal
//     chain marks ClusterIP traffic with --masquerade-all or, with a detector, from
//     outside the cluster CIDR. Those are the model's flags except under
//     internalTrafficPolicy Local, where kube-proxy masquerades ClusterIP traffic
//     not from a pod and the model does not.
type portView struct {
	sp          dataplane.ServicePort
	name, proto string // kube-proxy's ServicePortName.String() and lower-case protocol
	chains      portChains
	clusterIP   *dataplane.FrontendState
	externalIPs []*dataplane.FrontendState
	lbIPs       []*dataplane.FrontendState
	nodePorts   []*dataplane.FrontendState
}

// portViews groups frontends by service port, in service name, port name and
// protocol order (kube-proxy iterates a map; a stable order keeps the output
// deterministic), frontends of one kind by address.
func portViews(fs []*dataplane.FrontendState) []*portView {
	slices.SortFunc(fs, compareFrontends)
	var out []*portView
	var v *portView
	for _, f := range fs {
		if v == nil || f.Service != v.sp {
			name, proto := portName(f.Service), protoName(f.Service.Protocol)
			v = &portView{sp: f.Service, name: name, proto: proto, chains: chainsOf(name, proto)}
			out = append(out, v)
		}
		switch f.Type {
		case dataplane.ClusterIP:
			v.clusterIP = f
		case dataplane.ExternalIP:
			v.externalIPs = append(v.externalIPs, f)
		case dataplane.LoadBalancerIP:
			v.lbIPs = append(v.lbIPs, f)
		case dataplane.NodePort:
			v.nodePorts = append(v.nodePorts, f)
		}
	}
	return out
}

func compareFrontends(a, b *dataplane.FrontendState) int {
	sa, sb := a.Service, b.Service
	return cmp.Or(
		strings.Compare(sa.Namespace, sb.Namespace),
		strings.Compare(sa.Name, sb.Name),
		strings.Compare(sa.Port, sb.Port),
		strings.Compare(string(sa.Protocol), string(sb.Protocol)),
		cmp.Compare(a.Type, b.Type),
		a.Addr.Compare(b.Addr),
		cmp.Compare(a.Port, b.Port),
	)
}

// first is any frontend of the port, for what they all share (policies, affinity,
// health-check port).
func (v *portView) first() *dataplane.FrontendState {
	if v.clusterIP != nil {
		return v.clusterIP
	}
	return v.ext()
}

// ext is any external frontend: kube-proxy's ExternallyAccessible.
func (v *portView) ext() *dataplane.FrontendState {
	for _, fs := range [][]*dataplane.FrontendState{v.externalIPs, v.lbIPs, v.nodePorts} {
		if len(fs) > 0 {
			return fs[0]
		}
	}
	return nil
}

func hasEndpoints(f *dataplane.FrontendState) bool { return f.Host.Verdict != dataplane.Reject }

func (v *portView) internalChain() string {
	if v.first().InternalTrafficLocal {
		return v.chains.svl
	}
	return v.chains.svc
}

func (v *portView) externalPolicyChain() string {
	if v.first().ExternalTrafficLocal {
		return v.chains.svl
	}
	return v.chains.svc
}

func (v *portView) clusterEndpoints() []dataplane.Endpoint {
	if e := v.ext(); e != nil {
		return e.Host.Backends
	}
	if v.clusterIP != nil && !v.clusterIP.InternalTrafficLocal {
		return v.clusterIP.Pod.Backends
	}
	return nil
}

func (v *portView) localEndpoints() []dataplane.Endpoint {
	if v.clusterIP != nil && v.clusterIP.InternalTrafficLocal {
		return v.clusterIP.Pod.Backends
	}
	if e := v.ext(); e != nil && e.ExternalTrafficLocal {
		return e.Outside.Backends
	}
	return nil
}

// sourceRanges are the LoadBalancer source ranges; one that is 0.0.0.0/0 (::/0)
// allows everyone, so kube-proxy drops the list.
func (v *portView) sourceRanges() []netip.Prefix {
	if len(v.lbIPs) == 0 {
		return nil
	}
	r := v.lbIPs[0].SourceRanges
	if slices.ContainsFunc(r, func(p netip.Prefix) bool { return p.Bits() == 0 }) {
		return nil
	}
	return r
}

// usesFW: LoadBalancer IPs go through the FW chain.
func (v *portView) usesFW() bool {
	return len(v.lbIPs) > 0 && hasEndpoints(v.lbIPs[0]) && len(v.sourceRanges()) > 0
}
