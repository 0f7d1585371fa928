package ipvs

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/switchyard/switchyard/dataplane"
)

// kernelService is a virtual service as the kernel holds it.
type kernelService struct {
	svc   VirtualService
	dests map[netip.AddrPort]Destination
}

// ipvsState keeps the virtual services and the device's addresses in the
// kernel, writing only what changed. Its maps mirror the kernel: each entry
// changes right after the write that made it true, so a failure halfway leaves
// them right, and the next full sync reads the kernel back anyway.
type ipvsState struct {
	ipvs    IPVS
	links   Links
	device  string
	opts    Options
	records Records

	// services are Switchyard's virtual services in the kernel.
	services map[dataplane.FrontendKey]*kernelService
	// addrs are the device's addresses; local the node's other addresses (read
	// on full syncs: they decide whether an external address goes on the device).
	addrs, local map[netip.Addr]bool
	// wanted is what each frontend asked for last; users counts, per address,
	// the wanted frontends that put it on the device.
	wanted map[dataplane.FrontendKey]*Wanted
	users  map[netip.Addr]int
	// draining are the services with destinations at weight 0 that go once
	// their connections are gone (kube-proxy's graceful termination).
	draining map[dataplane.FrontendKey]bool
	// recorded are the keys in records (nil until loaded).
	recorded map[dataplane.FrontendKey]bool
}

func newIPVSState(i IPVS, l Links, device string, o Options, r Records) *ipvsState {
	return &ipvsState{ipvs: i, links: l, device: device, opts: o, records: r,
		services: map[dataplane.FrontendKey]*kernelService{}, addrs: map[netip.Addr]bool{}, local: map[netip.Addr]bool{},
		wanted: map[dataplane.FrontendKey]*Wanted{}, users: map[netip.Addr]int{}, draining: map[dataplane.FrontendKey]bool{}}
}

// outcome collects what went wrong in one sync: failures that concern one
// frontend, and the others.
type outcome struct {
	global    []error
	frontends map[dataplane.FrontendKey][]error
}

func (o *outcome) fail(k dataplane.FrontendKey, err error) {
	if o.frontends == nil {
		o.frontends = map[dataplane.FrontendKey][]error{}
	}
	o.frontends[k] = append(o.frontends[k], fmt.Errorf("ipvs %s: %w", k, err))
}

// readLinks makes sure the device exists and reads back its addresses and the
// node's other addresses: a full sync starts from what the kernel holds, not
// from what was written.
func (s *ipvsState) readLinks() error {
	if err := s.links.EnsureDummy(s.device); err != nil {
		return fmt.Errorf("device %s: %w", s.device, err)
	}
	addrs, err := s.links.Addrs(s.device)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", s.device, err)
	}
	local, err := s.links.LocalAddrs(s.device)
	if err != nil {
		return fmt.Errorf("node addresses: %w", err)
	}
	if err := s.loadRecords(); err != nil {
		return err
	}
	s.addrs, s.local = setOf(addrs), setOf(local)
	return nil
}

// readServices reads back Switchyard's virtual services with their
// destinations, and those with a key a frontend wants (a service at that key
// is taken over whoever made it).
func (s *ipvsState) readServices(want map[dataplane.FrontendKey]*Wanted) error {
	svcs, err := s.ipvs.Services()
	if err != nil {
		return fmt.Errorf("ipvs services: %w", err)
	}
	s.services = map[dataplane.FrontendKey]*kernelService{}
	for _, vs := range svcs {
		if !s.ours(vs.FrontendKey) && want[vs.FrontendKey] == nil {
			continue
		}
		dests, err := s.ipvs.Destinations(vs.FrontendKey)
		if err != nil {
			return fmt.Errorf("ipvs destinations of %s: %w", vs.FrontendKey, err)
		}
		ks := &kernelService{svc: vs, dests: map[netip.AddrPort]Destination{}}
		for _, d := range dests {
			ks.dests[d.AddrPort()] = d
		}
		s.services[vs.FrontendKey] = ks
	}
	// Quiesced destinations are found again by program, which retires every
	// destination that is not wanted.
	s.draining = map[dataplane.FrontendKey]bool{}
	return nil
}

// ours tells Switchyard's virtual services from others after a restart: those
// on the device's addresses (ClusterIPs, externalIPs, LoadBalancer IPs), those
// on a port of --node-port-range (NodePorts: Switchyard reserves the range, as
// kube-proxy does, so nothing else serves there), and the recorded ones.
func (s *ipvsState) ours(k dataplane.FrontendKey) bool {
	return s.addrs[k.Addr] || s.opts.Model.NodePortRange.Contains(int(k.Port)) || s.recorded[k]
}

// recognisable: after a restart, ours() will know the service without a record.
func (s *ipvsState) recognisable(k dataplane.FrontendKey, w *Wanted) bool {
	return w.Bind || s.opts.Model.NodePortRange.Contains(int(k.Port))
}

// program is the first half of a sync: the device's new addresses, then the
// virtual services with their destinations, for the keys in want (a nil value:
// the frontend is gone, handled by finish). With full, want has every frontend.
// When ctx ends it stops between two frontends: each is written completely or
// not at all.
func (s *ipvsState) program(ctx context.Context, want map[dataplane.FrontendKey]*Wanted, full bool, out *outcome) {
	if err := s.record(want, true); err != nil {
		out.global = append(out.global, err)
		return
	}
	if full {
		s.wanted, s.users = map[dataplane.FrontendKey]*Wanted{}, map[netip.Addr]int{}
	}
	keys := sortedKeys(want)
	for i, k := range keys {
		if err := ctx.Err(); err != nil {
			out.global = append(out.global, fmt.Errorf("ipvs: stopped after %d of %d frontends: %w", i, len(keys), err))
			return
		}
		if old := s.wanted[k]; old != nil && old.Bind {
			s.users[k.Addr]--
		}
		w := want[k]
		if w == nil {
			delete(s.wanted, k)
			continue
		}
		s.wanted[k] = w
		if w.Bind {
			s.users[k.Addr]++
		}
		s.programService(k, w, out)
	}
}

func (s *ipvsState) programService(k dataplane.FrontendKey, w *Wanted, out *outcome) {
	if w.Bind && !s.addrs[k.Addr] {
		if err := s.links.AddAddr(s.device, k.Addr); err != nil {
			out.fail(k, fmt.Errorf("adding the address to %s: %w", s.device, err))
			return
		}
		s.addrs[k.Addr] = true
	}
	ks := s.services[k]
	switch {
	case ks == nil:
		if err := s.ipvs.AddService(w.Service); err != nil {
			out.fail(k, err)
			return
		}
		ks = &kernelService{svc: w.Service, dests: map[netip.AddrPort]Destination{}}
		s.services[k] = ks
	case ks.svc != w.Service:
		if err := s.ipvs.UpdateService(w.Service); err != nil {
			out.fail(k, err)
			return
		}
		ks.svc = w.Service
	}
	wanted := map[netip.AddrPort]bool{}
	for _, d := range w.Dests {
		wanted[d.AddrPort()] = true
		have, ok := ks.dests[d.AddrPort()]
		var err error
		switch {
		case !ok:
			err = s.ipvs.AddDestination(k, d)
		case have.Weight != d.Weight:
			err = s.ipvs.UpdateDestination(k, d)
			d.ActiveConns, d.InactiveConns = have.ActiveConns, have.InactiveConns
		default:
			continue
		}
		if err != nil {
			out.fail(k, fmt.Errorf("destination %s: %w", d.AddrPort(), err))
			continue
		}
		ks.dests[d.AddrPort()] = d
	}
	for _, ap := range sortedAddrPorts(ks.dests) {
		if !wanted[ap] {
			s.retire(k, ks, ks.dests[ap], out)
		}
	}
}

// retire starts the removal of a destination the frontend no longer has. TCP
// connections may go on: the destination gets weight 0, so it gets no new ones,
// and drain deletes it once it has none left (kube-proxy's graceful
// termination). UDP and SCTP destinations go at once, as in kube-proxy:
// expire_nodest_conn ends their flows at the next packet, which is then
// scheduled afresh.
func (s *ipvsState) retire(k dataplane.FrontendKey, ks *kernelService, d Destination, out *outcome) {
	if k.Protocol != dataplane.TCP {
		if err := s.ipvs.DeleteDestination(k, d.AddrPort()); err != nil {
			out.fail(k, fmt.Errorf("deleting destination %s: %w", d.AddrPort(), err))
			return
		}
		delete(ks.dests, d.AddrPort())
		return
	}
	if d.Weight != 0 {
		d.Weight = 0
		if err := s.ipvs.UpdateDestination(k, d); err != nil {
			out.fail(k, fmt.Errorf("quiescing destination %s: %w", d.AddrPort(), err))
			return
		}
		ks.dests[d.AddrPort()] = d
	}
	s.draining[k] = true
}
