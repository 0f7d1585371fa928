package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// State is the desired state of this node: every frontend it serves.
type State struct {
	Node      NodeInfo
	Frontends map[FrontendKey]*FrontendState
	Services  map[ServiceName]*ServiceState
	// claims lists, per key, every service that wants it; the first in name order
	// owns the key, so a collision resolves the same way whatever the event order.
	claims map[FrontendKey][]ServiceName
}

// NewState returns an empty desired state.
func NewState() *State {
	return &State{
		Frontends: map[FrontendKey]*FrontendState{},
		Services:  map[ServiceName]*ServiceState{},
		claims:    map[FrontendKey][]ServiceName{},
	}
}

// ChangeSet is what changed between two desired states.
type ChangeSet struct {
	// Frontends that were added, changed or removed; a key absent from
	// State.Frontends was removed.
	Frontends map[FrontendKey]struct{}
	// Services whose desired state changed in any way.
	Services map[ServiceName]struct{}
	// Problems of services whose problems changed (non-empty lists only), including
	// losing a frontend to another service.
	Problems map[ServiceName][]Problem
}

func newChangeSet() *ChangeSet {
	return &ChangeSet{Frontends: map[FrontendKey]struct{}{}, Services: map[ServiceName]struct{}{}, Problems: map[ServiceName][]Problem{}}
}

// Empty reports whether nothing changed.
func (c *ChangeSet) Empty() bool { return len(c.Frontends) == 0 && len(c.Services) == 0 }

// Apply replaces the state of the given services (nil: the service is gone) and
// returns what changed. Updates equal to the current state drop out.
func (s *State) Apply(updates map[ServiceName]*ServiceState) *ChangeSet {
	cs := newChangeSet()
	names := make([]ServiceName, 0, len(updates))
	for n := range updates {
		names = append(names, n)
	}
	slices.SortFunc(names, compareNames)
	for _, n := range names {
		s.update(n, updates[n], cs)
	}
	return cs
}

func (s *State) update(name ServiceName, next *ServiceState, cs *ChangeSet) {
	prev := s.Services[name]
	if serviceEqual(prev, next) {
		return
	}
	cs.Services[name] = struct{}{}
	if next == nil {
		delete(s.Services, name)
	} else {
		s.Services[name] = next
		if prev == nil || !slices.Equal(prev.Problems, next.Problems) {
			if len(next.Problems) > 0 {
				cs.Problems[name] = slices.Clone(next.Problems)
			}
		}
	}
	touched := map[FrontendKey]struct{}{}
	if prev != nil {
		for i := range prev.Frontends {
			k := prev.Frontends[i].FrontendKey
			touched[k] = struct{}{}
			s.claims[k] = slices.DeleteFunc(s.claims[k], func(x ServiceName) bool { return x == name })
		}
	}
	if next != nil {
		for i := range next.Frontends {
			k := next.Frontends[i].FrontendKey
			touched[k] = struct{}{}
			if !slices.Contains(s.claims[k], name) {
				s.claims[k] = append(s.claims[k], name)
				slices.SortFunc(s.claims[k], compareNames)
			}
		}
	}
	for k := range touched {
		s.resolve(k, cs)
	}
}

// resolve makes the owner of k the one programmed.
func (s *State) resolve(k FrontendKey, cs *ChangeSet) {
	owners := s.claims[k]
	var want *FrontendState
	if len(owners) == 0 {
		delete(s.claims, k)
	} else {
		want = s.Services[owners[0]].frontend(k)
		for _, loser := range owners[1:] {
			cs.Problems[loser] = append(cs.Problems[loser], Problem{
				Reason:  "FrontendConflict",
				Message: fmt.Sprintf("%s is also claimed by service %s, which keeps it", k, owners[0]),
			})
		}
	}
	have := s.Frontends[k]
	if frontendEqual(have, want) {
		return
	}
	if want == nil {
		delete(s.Frontends, k)
	} else {
		s.Frontends[k] = want
	}
	cs.Frontends[k] = struct{}{}
}

func (st *ServiceState) frontend(k FrontendKey) *FrontendState {
	i, ok := slices.BinarySearchFunc(st.Frontends, k, func(f FrontendState, k FrontendKey) int { return compareKeys(f.FrontendKey, k) })
	if !ok {
		return nil
	}
	return &st.Frontends[i]
}

// Diff returns the frontends and services that differ between two states. Use it
// to compare a full rebuild with what is programmed; incremental updates use Apply.
func Diff(prev, next *State) *ChangeSet {
	cs := newChangeSet()
	for k, f := range prev.Frontends {
		if !frontendEqual(f, next.Frontends[k]) {
			cs.Frontends[k] = struct{}{}
		}
	}
	for k, f := range next.Frontends {
		if _, ok := prev.Frontends[k]; !ok || !frontendEqual(prev.Frontends[k], f) {
			cs.Frontends[k] = struct{}{}
		}
	}
	for n, sv := range prev.Services {
		if !serviceEqual(sv, next.Services[n]) {
			cs.Services[n] = struct{}{}
		}
	}
	for n, sv := range next.Services {
		if !serviceEqual(prev.Services[n], sv) {
			cs.Services[n] = struct{}{}
		}
	}
	return cs
}

// SortedFrontends returns the frontends ordered by service, then type, then key.
func (s *State) SortedFrontends() []*FrontendState {
	out := make([]*FrontendState, 0, len(s.Frontends))
	for _, f := range s.Frontends {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *FrontendState) int {
		if c := strings.Compare(a.Service.String(), b.Service.String()); c != 0 {
			return c
		}
		if a.Type != b.Type {
			return int(a.Type) - int(b.Type)
		}
		return compareKeys(a.FrontendKey, b.FrontendKey)
	})
	return out
}

func compareNames(a, b ServiceName) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

func serviceEqual(a, b *ServiceState) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Name == b.Name && a.HealthCheckNodePort == b.HealthCheckNodePort && a.LocalEndpoints == b.LocalEndpoints &&
		slices.Equal(a.Problems, b.Problems) &&
		slices.EqualFunc(a.Frontends, b.Frontends, func(x, y FrontendState) bool { return frontendEqual(&x, &y) })
}

func frontendEqual(a, b *FrontendState) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Frontend == b.Frontend && a.Service == b.Service && a.Affinity == b.Affinity &&
		a.ExternalTrafficLocal == b.ExternalTrafficLocal && a.InternalTrafficLocal == b.InternalTrafficLocal &&
		a.HealthCheckNodePort == b.HealthCheckNodePort &&
		slices.Equal(a.SourceRanges, b.SourceRanges) &&
		routeEqual(&a.Pod, &b.Pod) && routeEqual(&a.Host, &b.Host) && routeEqual(&a.Outside, &b.Outside)
}

func routeEqual(a, b *Route) bool {
	return a.Verdict == b.Verdict && a.Masquerade == b.Masquerade && slices.EqualFunc(a.Backends, b.Backends, endpointEqual)
}

func endpointEqual(a, b Endpoint) bool {
	return a.Addr == b.Addr && a.Port == b.Port && a.Ready == b.Ready && a.Serving == b.Serving &&
		a.Terminating == b.Terminating && a.Local == b.Local && a.NodeName == b.NodeName && a.Zone == b.Zone &&
		slices.Equal(a.ZoneHints, b.ZoneHints) && slices.Equal(a.NodeHints, b.NodeHints)
}

// NodePortAddrs lists the distinct addresses NodePort frontends use, for
// health-check servers that listen where NodePorts do.
func (s *State) NodePortAddrs(cfg Config) []netip.Addr {
	var out []netip.Addr
	for _, f := range s.Node.Families() {
		out = append(out, s.Node.NodePortIPs(f, cfg)...)
	}
	return out
}

func sortServices(s []*ServiceState) {
	slices.SortFunc(s, func(a, b *ServiceState) int { return compareNames(a.Name, b.Name) })
}
