package ipvs

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/switchyard/switchyard/dataplane"
)

// finish is the second half of a sync, once the rules no longer lead to what
// goes: virtual services that are gone are deleted, then the addresses nothing
// uses any more, then the drained destinations.
func (s *ipvsState) finish(want map[dataplane.FrontendKey]*Wanted, full bool, out *outcome) {
	// A partial sync looks only at its own keys and their addresses.
	keys, addrs := want, map[netip.Addr]bool{}
	if full {
		keys, addrs = map[dataplane.FrontendKey]*Wanted{}, s.addrs
		for k := range s.services {
			keys[k] = nil
		}
	} else {
		for k := range want {
			addrs[k.Addr] = true
		}
	}
	for _, k := range sortedKeys(keys) {
		if s.wanted[k] != nil || s.services[k] == nil {
			continue
		}
		if err := s.ipvs.DeleteService(k); err != nil {
			out.fail(k, fmt.Errorf("deleting the service: %w", err))
			continue
		}
		delete(s.services, k)
		delete(s.draining, k)
	}
	for _, a := range slices.SortedFunc(maps.Keys(addrs), netip.Addr.Compare) {
		if !s.addrs[a] || s.users[a] > 0 {
			continue
		}
		if err := s.links.DelAddr(s.device, a); err != nil {
			out.global = append(out.global, fmt.Errorf("removing %s from %s: %w", a, s.device, err))
			continue
		}
		delete(s.addrs, a)
		delete(s.users, a)
	}
	s.drain(out)
	if err := s.record(want, false); err != nil {
		out.global = append(out.global, err)
	}
}

// drain deletes the quiesced destinations that have no connections left; it
// reads their counts from the kernel, at every sync (a full one comes every
// --sync-period).
func (s *ipvsState) drain(out *outcome) {
	for _, k := range slices.SortedFunc(maps.Keys(s.draining), compareKeys) {
		ks := s.services[k]
		if ks == nil {
			delete(s.draining, k)
			continue
		}
		dests, err := s.ipvs.Destinations(k)
		if err != nil {
			out.fail(k, fmt.Errorf("reading destinations to drain: %w", err))
			continue
		}
		left := false
		for _, d := range dests {
			ap := d.AddrPort()
			if s.wanted[k] != nil && slices.ContainsFunc(s.wanted[k].Dests, func(w Destination) bool { return w.AddrPort() == ap }) {
				continue
			}
			if d.ActiveConns+d.InactiveConns > 0 {
				ks.dests[ap] = d
				left = true
				continue
			}
			if err := s.ipvs.DeleteDestination(k, ap); err != nil {
				out.fail(k, fmt.Errorf("deleting drained destination %s: %w", ap, err))
				left = true
				continue
			}
			delete(ks.dests, ap)
		}
		if !left {
			delete(s.draining, k)
		}
	}
}

// cleanup deletes Switchyard's virtual services (as ours() knows them, so also
// an earlier process's), then the device with its addresses.
func (s *ipvsState) cleanup() error {
	var errs []error
	addrs, err := s.links.Addrs(s.device)
	switch {
	case errors.Is(err, ErrNoDevice):
	case err != nil:
		return err
	}
	s.addrs = setOf(addrs)
	if err := s.loadRecords(); err != nil {
		return err
	}
	var svcs []VirtualService
	if s.ipvs != nil { // nil: the kernel has no IPVS, so no service either
		if svcs, err = s.ipvs.Services(); err != nil {
			return err
		}
	}
	for _, vs := range svcs {
		if s.ours(vs.FrontendKey) || s.wanted[vs.FrontendKey] != nil {
			if err := s.ipvs.DeleteService(vs.FrontendKey); err != nil {
				errs = append(errs, fmt.Errorf("ipvs: deleting %s: %w", vs.FrontendKey, err))
			}
		}
	}
	errs = append(errs, s.links.DeleteDummy(s.device))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if s.records != nil {
		if err := s.records.Store(nil); err != nil {
			return err
		}
	}
	s.services, s.addrs, s.recorded = map[dataplane.FrontendKey]*kernelService{}, map[netip.Addr]bool{}, map[dataplane.FrontendKey]bool{}
	s.wanted, s.users, s.draining = map[dataplane.FrontendKey]*Wanted{}, map[netip.Addr]int{}, map[dataplane.FrontendKey]bool{}
	return nil
}

func setOf(addrs []netip.Addr) map[netip.Addr]bool {
	out := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		out[a.Unmap()] = true
	}
	return out
}

func sortedKeys[V any](m map[dataplane.FrontendKey]V) []dataplane.FrontendKey {
	return slices.SortedFunc(maps.Keys(m), compareKeys)
}

func compareKeys(a, b dataplane.FrontendKey) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	if a.Protocol < b.Protocol {
		return -1
	}
	if a.Protocol > b.Protocol {
		return 1
	}
	return 0
}

func sortedAddrPorts(m map[netip.AddrPort]Destination) []netip.AddrPort {
	return slices.SortedFunc(maps.Keys(m), netip.AddrPort.Compare)
}
