package ipvs

import (
	"net/netip"
	"slices"

	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// staleUDP is what conntrack must forget after the sync: the flows of UDP
// frontends that get their first destination (their packets were refused), and
// those that went to a destination that is gone (kube-proxy's conntrack
// cleanup in IPVS mode).
func staleUDP(old, want map[dataplane.FrontendKey]*Wanted, full bool) netfilter.StaleUDP {
	var out netfilter.StaleUDP
	keys := map[dataplane.FrontendKey]bool{}
	for k := range want {
		keys[k] = true
	}
	if full {
		for k := range old {
			keys[k] = true
		}
	}
	for _, k := range sortedKeys(keys) {
		if k.Protocol != dataplane.UDP {
			continue
		}
		fe := netip.AddrPortFrom(k.Addr, k.Port)
		before, now := destsOf(old[k]), destsOf(want[k])
		if len(before) == 0 && len(now) > 0 {
			out.Services = append(out.Services, fe)
		}
		for _, d := range before {
			if !slices.Contains(now, d) {
				out.Endpoints = append(out.Endpoints, netfilter.StaleEndpoint{Service: fe, Endpoint: d})
			}
		}
	}
	return out
}

func destsOf(w *Wanted) []netip.AddrPort {
	if w == nil {
		return nil
	}
	out := make([]netip.AddrPort, len(w.Dests))
	for i, d := range w.Dests {
		out[i] = d.AddrPort()
	}
	return out
}

func (b *Backend) clearStale(stale netfilter.StaleUDP) {
	if b.cfg.Conntrack == nil || (len(stale.Services) == 0 && len(stale.Endpoints) == 0) {
		return
	}
	if _, err := b.cfg.Conntrack.Clear(stale); err != nil {
		// IPVS is right; a stale entry only delays a client until it expires.
		klog.ErrorS(err, "Clearing stale UDP conntrack entries")
	}
}
