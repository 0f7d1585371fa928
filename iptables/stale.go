package iptables

import (
	"net/netip"
	"slices"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// udpFrontends are the endpoints each UDP frontend sends new flows to, as last
// programmed: the difference to the next state is what conntrack must forget
// (kube-proxy's conntrack cleanup). TCP needs none: its connections end.
type udpFrontends map[dataplane.FrontendKey][]netip.AddrPort

// update records st and returns what became stale: frontends that got their
// first endpoint (their flows were being rejected or dropped) and endpoints a
// frontend no longer uses.
func (u udpFrontends) update(st *dataplane.State, changes *dataplane.ChangeSet) netfilter.StaleUDP {
	var stale netfilter.StaleUDP
	for _, k := range u.keys(st, changes) {
		if k.Protocol != dataplane.UDP {
			continue
		}
		fe := netip.AddrPortFrom(k.Addr, k.Port)
		now, before := endpointsOf(st.Frontends[k]), u[k]
		if len(before) == 0 && len(now) > 0 {
			stale.Services = append(stale.Services, fe)
		}
		for _, ep := range before {
			if !slices.Contains(now, ep) {
				stale.Endpoints = append(stale.Endpoints, netfilter.StaleEndpoint{Service: fe, Endpoint: ep})
			}
		}
		if len(now) > 0 {
			u[k] = now
		} else {
			delete(u, k)
		}
	}
	return stale
}

func (u udpFrontends) keys(st *dataplane.State, changes *dataplane.ChangeSet) []dataplane.FrontendKey {
	var keys []dataplane.FrontendKey
	if changes != nil {
		for k := range changes.Frontends {
			keys = append(keys, k)
		}
		return keys
	}
	for k := range st.Frontends {
		keys = append(keys, k)
	}
	for k := range u {
		if st.Frontends[k] == nil {
			keys = append(keys, k)
		}
	}
	return keys
}

// endpointsOf are the endpoints any client of the frontend may reach.
func endpointsOf(f *dataplane.FrontendState) []netip.AddrPort {
	if f == nil {
		return nil
	}
	var out []netip.AddrPort
	for _, r := range f.Routes() {
		for _, b := range r.Backends {
			if ap := b.AddrPort(); !slices.Contains(out, ap) {
				out = append(out, ap)
			}
		}
	}
	return out
}
