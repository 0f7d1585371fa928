package ipvs

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// FakeLinks is a network namespace's devices and addresses in memory, for unit
// tests: devices of a kind (dummy or anything else) with their addresses. It
// refuses what the kernel refuses (a device that is not there, deleting a
// device that is not a dummy) and records every call that writes.
type FakeLinks struct {
	mu       sync.Mutex
	devices  map[string]*fakeDevice
	calls    []string
	failNext int
}

type fakeDevice struct {
	kind  string
	up    bool
	addrs map[netip.Addr]bool
}

// ErrFakeLinks is the error of a call failed by FailNext.
var ErrFakeLinks = errors.New("fake netlink: injected failure")

// NewFakeLinks returns a namespace with the given devices (not dummies) and
// their addresses, e.g. {"eth0": node IPs, "lo": 127.0.0.1}.
func NewFakeLinks(devices map[string][]netip.Addr) *FakeLinks {
	f := &FakeLinks{devices: map[string]*fakeDevice{}}
	for name, addrs := range devices {
		f.devices[name] = &fakeDevice{kind: "veth", up: true, addrs: setOf(addrs)}
	}
	return f
}

// FailNext makes the next n calls fail with ErrFakeLinks, changing nothing.
func (f *FakeLinks) FailNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = n
}

// Calls returns the writing calls so far ("AddAddr swyd-ipvs0 10.96.0.1").
func (f *FakeLinks) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// ResetCalls forgets the calls so far.
func (f *FakeLinks) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// Device returns a device's addresses (sorted), whether it is up, and whether
// it exists.
func (f *FakeLinks) Device(name string) (addrs []netip.Addr, up, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devices[name]
	if d == nil {
		return nil, false, false
	}
	return slices.SortedFunc(maps.Keys(d.addrs), netip.Addr.Compare), d.up, true
}

func (f *FakeLinks) do(call string, op func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if call != "" {
		f.calls = append(f.calls, call)
	}
	if f.failNext > 0 {
		f.failNext--
		return ErrFakeLinks
	}
	return op()
}

func (f *FakeLinks) device(name string) (*fakeDevice, error) {
	d := f.devices[name]
	if d == nil {
		return nil, fmt.Errorf("%s: %w", name, ErrNoDevice)
	}
	return d, nil
}

func (f *FakeLinks) EnsureDummy(name string) error {
	return f.do("EnsureDummy "+name, func() error {
		d := f.devices[name]
		if d == nil {
			d = &fakeDevice{kind: "dummy", addrs: map[netip.Addr]bool{}}
			f.devices[name] = d
		}
		if d.kind != "dummy" {
			return fmt.Errorf("%s is a %s device, not a dummy", name, d.kind)
		}
		d.up = true
		return nil
	})
}

func (f *FakeLinks) DeleteDummy(name string) error {
	return f.do("DeleteDummy "+name, func() error {
		d := f.devices[name]
		switch {
		case d == nil:
			return nil
		case d.kind != "dummy":
			return fmt.Errorf("%s is a %s device, not a dummy: not deleting it", name, d.kind)
		}
		delete(f.devices, name)
		return nil
	})
}

func (f *FakeLinks) Addrs(name string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := f.do("", func() error {
		d, err := f.device(name)
		if err != nil {
			return err
		}
		out = slices.SortedFunc(maps.Keys(d.addrs), netip.Addr.Compare)
		return nil
	})
	return out, err
}

func (f *FakeLinks) AddAddr(name string, a netip.Addr) error {
	return f.do("AddAddr "+name+" "+a.String(), func() error {
		d, err := f.device(name)
		if err != nil {
			return err
		}
		d.addrs[a] = true
		return nil
	})
}

func (f *FakeLinks) DelAddr(name string, a netip.Addr) error {
	return f.do("DelAddr "+name+" "+a.String(), func() error {
		d, err := f.device(name)
		if err != nil {
			return err
		}
		delete(d.addrs, a)
		return nil
	})
}

func (f *FakeLinks) LocalAddrs(except string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := f.do("", func() error {
		for name, d := range f.devices {
			if name != except {
				out = append(out, slices.Collect(maps.Keys(d.addrs))...)
			}
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return nil
	})
	return out, err
}
