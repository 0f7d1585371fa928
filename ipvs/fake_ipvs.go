package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/dataplane"
)

// FakeIPVS is an IPVS table in memory for unit tests. It keeps what the kernel
// keeps and refuses what the kernel refuses, with the kernel's errors: a
// service or destination that exists already (EEXIST), a service that does not
// (ESRCH), a destination that does not (ENOENT), an unknown scheduler (ENOENT).
// kernel_test.go checks this against a real kernel. It is stricter in one
// thing: a destination of the other family (EINVAL; the kernel would take its
// first bytes as an address of the service's family). It records every call.
type FakeIPVS struct {
	mu       sync.Mutex
	services map[dataplane.FrontendKey]*fakeService
	calls    []string
	failNext int
	failKeys map[dataplane.FrontendKey]error
}

type fakeService struct {
	svc   VirtualService
	dests map[netip.AddrPort]Destination
}

// ErrFakeIPVS is the error of a call failed by FailNext.
var ErrFakeIPVS = errors.New("fake ipvs: injected failure")

func NewFakeIPVS() *FakeIPVS {
	return &FakeIPVS{services: map[dataplane.FrontendKey]*fakeService{}, failKeys: map[dataplane.FrontendKey]error{}}
}

// FailNext makes the next n calls that write fail with ErrFakeIPVS, changing nothing.
func (f *FakeIPVS) FailNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = n
}

// FailKey makes every write to the service k fail with err (nil: stop).
func (f *FakeIPVS) FailKey(k dataplane.FrontendKey, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.failKeys, k)
	} else {
		f.failKeys[k] = err
	}
}

// Calls returns the calls so far ("AddService 10.96.0.1:80/TCP", ...).
func (f *FakeIPVS) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// ResetCalls forgets the calls so far.
func (f *FakeIPVS) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// SetConns sets a destination's connection counts, as traffic would.
func (f *FakeIPVS) SetConns(k dataplane.FrontendKey, ap netip.AddrPort, active, inactive int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.services[k]
	if s == nil {
		return unix.ESRCH
	}
	d, ok := s.dests[ap]
	if !ok {
		return unix.ENOENT
	}
	d.ActiveConns, d.InactiveConns = active, inactive
	s.dests[ap] = d
	return nil
}

// Dump renders the table as ipvsadm would list it, one service and its
// destinations (sorted) a line: "10.96.0.1:80/TCP rr -> 10.0.1.1:8080 w1".
func (f *FakeIPVS) Dump() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, k := range sortedKeys(f.services) {
		s := f.services[k]
		line := fmt.Sprintf("%s %s", k, s.svc.Scheduler)
		if s.svc.Flags&FlagPersistent != 0 {
			line += fmt.Sprintf(" persistent %d", s.svc.Timeout)
		}
		if s.svc.Flags&FlagSourceHash != 0 {
			line += " sh-port"
		}
		for _, ap := range sortedAddrPorts(s.dests) {
			d := s.dests[ap]
			line += fmt.Sprintf(" -> %s w%d", ap, d.Weight)
			if d.ActiveConns+d.InactiveConns > 0 {
				line += fmt.Sprintf(" (%d+%d conns)", d.ActiveConns, d.InactiveConns)
			}
		}
		out = append(out, line)
	}
	return out
}

func (f *FakeIPVS) Services() ([]VirtualService, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "Services")
	var out []VirtualService
	for _, k := range sortedKeys(f.services) {
		out = append(out, f.services[k].svc)
	}
	return out, nil
}

// write runs a call that changes the table, after the injected failures.
func (f *FakeIPVS) write(call string, k dataplane.FrontendKey, op func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	if f.failNext > 0 {
		f.failNext--
		return ErrFakeIPVS
	}
	if err := f.failKeys[k]; err != nil {
		return err
	}
	return op()
}

func (f *FakeIPVS) AddService(s VirtualService) error {
	return f.write("AddService "+s.FrontendKey.String(), s.FrontendKey, func() error {
		if f.services[s.FrontendKey] != nil {
			return unix.EEXIST
		}
		if err := checkService(s); err != nil {
			return err
		}
		f.services[s.FrontendKey] = &fakeService{svc: s, dests: map[netip.AddrPort]Destination{}}
		return nil
	})
}

func (f *FakeIPVS) UpdateService(s VirtualService) error {
	return f.write("UpdateService "+s.FrontendKey.String(), s.FrontendKey, func() error {
		cur := f.services[s.FrontendKey]
		if cur == nil {
			return unix.ESRCH
		}
		if err := checkService(s); err != nil {
			return err
		}
		cur.svc = s
		return nil
	})
}

func checkService(s VirtualService) error {
	switch {
	case !slices.Contains(schedulers, s.Scheduler):
		return unix.ENOENT // "Scheduler module ip_vs_X not found"
	case protocolNumber(s.Protocol) == 0 || !s.Addr.IsValid():
		return unix.EINVAL
	}
	return nil
}

func (f *FakeIPVS) DeleteService(k dataplane.FrontendKey) error {
	return f.write("DeleteService "+k.String(), k, func() error {
		if f.services[k] == nil {
			return unix.ESRCH
		}
		delete(f.services, k)
		return nil
	})
}

func (f *FakeIPVS) Destinations(k dataplane.FrontendKey) ([]Destination, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "Destinations "+k.String())
	s := f.services[k]
	if s == nil {
		return nil, nil // the kernel's dump of a missing service is empty
	}
	var out []Destination
	for _, ap := range sortedAddrPorts(s.dests) {
		out = append(out, s.dests[ap])
	}
	return out, nil
}

func (f *FakeIPVS) AddDestination(k dataplane.FrontendKey, d Destination) error {
	return f.write("AddDestination "+k.String()+" "+d.String(), k, func() error {
		s, err := f.destService(k, d)
		if err != nil {
			return err
		}
		if _, ok := s.dests[d.AddrPort()]; ok {
			return unix.EEXIST
		}
		d.ActiveConns, d.InactiveConns = 0, 0
		s.dests[d.AddrPort()] = d
		return nil
	})
}

func (f *FakeIPVS) UpdateDestination(k dataplane.FrontendKey, d Destination) error {
	return f.write("UpdateDestination "+k.String()+" "+d.String(), k, func() error {
		s, err := f.destService(k, d)
		if err != nil {
			return err
		}
		cur, ok := s.dests[d.AddrPort()]
		if !ok {
			return unix.ENOENT
		}
		cur.Weight = d.Weight
		s.dests[d.AddrPort()] = cur
		return nil
	})
}

func (f *FakeIPVS) DeleteDestination(k dataplane.FrontendKey, ap netip.AddrPort) error {
	return f.write("DeleteDestination "+k.String()+" "+ap.String(), k, func() error {
		s := f.services[k]
		if s == nil {
			return unix.ESRCH
		}
		if _, ok := s.dests[ap]; !ok {
			return unix.ENOENT
		}
		delete(s.dests, ap)
		return nil
	})
}

// destService checks a destination as the kernel does for a NAT service.
func (f *FakeIPVS) destService(k dataplane.FrontendKey, d Destination) (*fakeService, error) {
	s := f.services[k]
	switch {
	case s == nil:
		return nil, unix.ESRCH
	case d.Addr.Is4() != k.Addr.Is4() || d.Weight < 0 || d.Port == 0:
		return nil, unix.EINVAL
	}
	return s, nil
}
