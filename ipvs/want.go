package ipvs

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/switchyard/switchyard/dataplane"
)

// Options shape the kernel configuration besides the desired state.
type Options struct {
	// Model is the model's configuration: the cluster CIDRs (the local-traffic
	// detector), --masquerade-all and the NodePort range.
	Model dataplane.Config
	// Scheduler is --ipvs-scheduler (rr when empty).
	Scheduler string
	// MasqueradeBit is --iptables-masquerade-bit.
	MasqueradeBit int
}

func (o Options) scheduler() string {
	if o.Scheduler == "" {
		return DefaultScheduler
	}
	return o.Scheduler
}

// Wanted is what one frontend asks of the kernel: its virtual service with
// the real servers, and whether its address goes on the device.
type Wanted struct {
	Service VirtualService
	// Dests are sorted by address and port, each with weight 1.
	Dests []Destination
	// Local marks the destinations that run on this node (hairpin masquerade).
	Local []bool
	// Bind: the address goes on the device. Every ClusterIP does; an externalIP or
	// LoadBalancer IP only when no other device of the node has it already
	// (kube-proxy's rule: taking such an address off the device again would take
	// the node's own address with it).
	Bind bool
}

// Want is WantFrontend for every frontend of st. nodeLocal are the addresses of
// the node's other devices.
func Want(st *dataplane.State, o Options, nodeLocal map[netip.Addr]bool) map[dataplane.FrontendKey]*Wanted {
	out := make(map[dataplane.FrontendKey]*Wanted, len(st.Frontends))
	for k, f := range st.Frontends {
		if w := WantFrontend(f, o, nodeLocal); w != nil {
			out[k] = w
		}
	}
	return out
}

// WantFrontend is the IPVS side of one frontend, or nil when IPVS mode does not
// program it: NodePorts on loopback addresses, which kube-proxy's IPVS mode
// leaves out too (IPVS would need route_localnet and its own masquerade there).
func WantFrontend(f *dataplane.FrontendState, o Options, nodeLocal map[netip.Addr]bool) *Wanted {
	if f == nil || (f.Type == dataplane.NodePort && f.Addr.IsLoopback()) {
		return nil
	}
	w := &Wanted{Service: VirtualService{FrontendKey: f.FrontendKey, Scheduler: o.scheduler()}}
	if f.Affinity > 0 {
		w.Service.Flags |= FlagPersistent
		w.Service.Timeout = uint32((f.Affinity + time.Second - 1) / time.Second)
	}
	if w.Service.Scheduler == "mh" {
		w.Service.Flags |= FlagSourceHash
	}
	for _, ep := range realServers(f) {
		w.Dests = append(w.Dests, Destination{Addr: ep.Addr, Port: ep.Port, Weight: 1})
		w.Local = append(w.Local, ep.Local)
	}
	switch f.Type {
	case dataplane.ClusterIP:
		w.Bind = true
	case dataplane.ExternalIP, dataplane.LoadBalancerIP:
		w.Bind = !nodeLocal[f.Addr]
	}
	return w
}

// realServers are the endpoints IPVS balances the frontend over. A virtual
// service has one set of real servers for every client, where the model has a
// route per class of client; they differ only under Local policies:
//   - externalTrafficPolicy Local with endpoints here: the local ones (Outside),
//     for every client, as kube-proxy's IPVS mode does (the model would send pods
//     and the node to all endpoints);
//   - externalTrafficPolicy Local without endpoints here: every endpoint (Host),
//     so pods and the node still reach the service, as in kube-proxy's IPVS mode
//     (kubernetes#97081) and the model; outside clients are dropped by a filter
//     rule, as the model says (kube-proxy's IPVS mode forwards them unmasqueraded
//     to endpoints elsewhere, whose replies never come back);
//   - no usable endpoint, or internalTrafficPolicy Local without local ones: none.
//     IPVS refuses new connections to a service without destinations (ICMP port
//     unreachable, which is how kube-proxy's IPVS mode REJECTs); Drop verdicts get
//     filter rules.
func realServers(f *dataplane.FrontendState) []dataplane.Endpoint {
	var eps []dataplane.Endpoint
	switch {
	case f.Outside.Verdict == dataplane.Forward:
		eps = f.Outside.Backends
	case f.Host.Verdict == dataplane.Forward:
		eps = f.Host.Backends
	default:
		return nil
	}
	eps = slices.Clone(eps)
	slices.SortFunc(eps, func(a, b dataplane.Endpoint) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
	})
	// The model deduplicates endpoints; a copy here would be a second real server
	// with the same key, which the kernel refuses.
	return slices.CompactFunc(eps, func(a, b dataplane.Endpoint) bool { return a.AddrPort() == b.AddrPort() })
}

// outsideDropped: a Local policy sends outside clients nowhere although the
// service has endpoints (elsewhere), so their new connections are dropped.
func outsideDropped(f *dataplane.FrontendState) bool {
	return f.Outside.Verdict == dataplane.Drop
}
