package netfilter

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// FakeConntrack records what a backend asked conntrack to clear, for unit tests. It refuses what
// the real one refuses (a match-everything service, an endpoint of another family).
type FakeConntrack struct {
	mu sync.Mutex
	// every frontend and frontend/endpoint pair cleared so far, in call order
	services  []netip.AddrPort
	endpoints []StaleEndpoint
	calls     int
	// Err, if set, is returned by every call (nothing is recorded then). Set it before use.
	Err error
}

func (f *FakeConntrack) ClearService(ip netip.Addr, port uint16) error {
	_, err := f.Clear(StaleUDP{Services: []netip.AddrPort{netip.AddrPortFrom(ip, port)}})
	return err
}

func (f *FakeConntrack) ClearEndpoint(svc, ep netip.AddrPort) error {
	_, err := f.Clear(StaleUDP{Endpoints: []StaleEndpoint{{Service: svc, Endpoint: ep}}})
	return err
}

// Clear validates stale as the real one does and records it; it reports 0 entries removed.
func (f *FakeConntrack) Clear(stale StaleUDP) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.Err != nil {
		return 0, f.Err
	}
	if _, err := newUDPFilters(stale); err != nil {
		return 0, err
	}
	f.services = append(f.services, stale.Services...)
	f.endpoints = append(f.endpoints, stale.Endpoints...)
	return 0, nil
}

// Cleared returns what was cleared so far and how many calls there were.
func (f *FakeConntrack) Cleared() (services []netip.AddrPort, endpoints []StaleEndpoint, calls int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.services), slices.Clone(f.endpoints), f.calls
}

// Reset forgets what was recorded.
func (f *FakeConntrack) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services, f.endpoints, f.calls = nil, nil, 0
}

// FakeSysctl is an in-memory Sysctl; names are used as given. A name never set reads as an error,
// like a sysctl the kernel does not have, unless it is in the map passed to NewFakeSysctl.
type FakeSysctl struct {
	mu     sync.Mutex
	values map[string]string
	writes int
}

// NewFakeSysctl starts with initial values (e.g. {SysctlRouteLocalnet: "0"}).
func NewFakeSysctl(initial map[string]string) *FakeSysctl {
	return &FakeSysctl{values: maps.Clone(initial)}
}

func (f *FakeSysctl) Get(name string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.values[name]
	if !ok {
		return "", fmt.Errorf("fake sysctl: no %s", name)
	}
	return v, nil
}

func (f *FakeSysctl) Set(name, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.values[name]; !ok {
		return fmt.Errorf("fake sysctl: no %s", name)
	}
	f.values[name] = value
	f.writes++
	return nil
}

// Writes counts the successful Set calls.
func (f *FakeSysctl) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}
