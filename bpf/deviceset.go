package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"

	"github.com/vishvananda/netns"
)

// deviceSet keeps the tc programs attached to the node's devices: the ones that
// face the outside get the load balancer, every other one (pods' veths) the
// reverse translation of replies.
type deviceSet struct {
	tc       *TCAttacher
	explicit []string
	progs    *tcOwn
	// ns is the network namespace whose devices these are: the agent's, taken
	// when it starts. Link notifications arrive on other threads, which need not
	// be in it.
	ns netns.NsHandle

	mu       sync.Mutex
	nodeIPs  []netip.Addr
	attached map[string]Device
	closed   bool // a link event may still arrive after close
}

// newDeviceSet works on the devices of the calling thread's network namespace.
func newDeviceSet(tc *TCAttacher, explicit []string, progs *tcOwn) (*deviceSet, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("the agent's network namespace: %w", err)
	}
	return &deviceSet{tc: tc, explicit: explicit, progs: progs, ns: ns, attached: map[string]Device{}}, nil
}

func (d *deviceSet) setNodeIPs(ips []netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nodeIPs = slices.Clone(ips)
}

// sync attaches to new devices and detaches from gone ones; all re-sets every
// device (full syncs: repairs what someone else changed).
func (d *deviceSet) sync(all bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	return runInNetns(d.ns, func() error { return d.syncHere(all) })
}

func (d *deviceSet) syncHere(all bool) error {
	devs, err := ListDevices(d.explicit, d.nodeIPs)
	if err != nil {
		return err
	}
	var errs []error
	seen := map[string]bool{}
	for _, dev := range devs {
		seen[dev.Name] = true
		if cur, ok := d.attached[dev.Name]; ok && cur == dev && !all {
			continue
		}
		if err := d.tc.Set(dev.Name, d.programsFor(dev)); err != nil {
			errs = append(errs, err)
			delete(d.attached, dev.Name)
			continue
		}
		d.attached[dev.Name] = dev
	}
	names, err := d.tc.Devices()
	errs = append(errs, err)
	for _, name := range names {
		if !seen[name] {
			errs = append(errs, d.tc.Remove(name))
		}
	}
	for name := range d.attached {
		if !seen[name] {
			delete(d.attached, name)
		}
	}
	errs = append(errs, d.tc.Prune())
	return errors.Join(errs...)
}

func (d *deviceSet) programsFor(dev Device) []TCProgram {
	if dev.External {
		return []TCProgram{
			{Name: "ext_in", Ingress: true, Program: d.progs.ExtIngress},
			{Name: "ext_out", Ingress: false, Program: d.progs.ExtEgress},
		}
	}
	return []TCProgram{
		{Name: "pod_in", Ingress: true, Program: d.progs.PodIngress},
		{Name: "pod_out", Ingress: false, Program: d.progs.PodEgress},
	}
}

func (d *deviceSet) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return errors.Join(d.tc.Close(), d.ns.Close())
}

// runInNetns runs fn on a thread in ns. A thread that cannot be switched back is
// left locked, so the runtime retires it instead of reusing it elsewhere.
func runInNetns(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	cur, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer cur.Close()
	if cur.Equal(ns) {
		// Already there, as every thread of an agent that runs in one netns
		// is: no setns, which would need CAP_SYS_ADMIN.
		runtime.UnlockOSThread()
		return fn()
	}
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering the agent's network namespace: %w", err)
	}
	ferr := fn()
	if err := netns.Set(cur); err != nil {
		return errors.Join(ferr, fmt.Errorf("leaving the agent's network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}
