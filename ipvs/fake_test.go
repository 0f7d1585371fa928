package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/dataplane"
)

// The fakes are checked step by step here; kernel_test.go runs the same steps
// on a real kernel (in the VM) and compares the transcripts.

// ipvsSteps drives an IPVS table through every call and what the kernel
// refuses, and writes down each outcome.
func ipvsSteps(h IPVS) []string {
	var out []string
	note := func(what string, err error) {
		var errno unix.Errno
		switch {
		case err == nil:
			out = append(out, what+": ok")
		case errors.As(err, &errno):
			out = append(out, what+": "+unix.ErrnoName(errno))
		default:
			out = append(out, what+": "+err.Error())
		}
	}
	list := func() {
		svcs, err := h.Services()
		note("Services", err)
		slices.SortFunc(svcs, func(a, b VirtualService) int { return compareKeys(a.FrontendKey, b.FrontendKey) })
		for _, s := range svcs {
			line := fmt.Sprintf("  %s %s flags=%#x timeout=%d", s.FrontendKey, s.Scheduler, s.Flags, s.Timeout)
			dests, err := h.Destinations(s.FrontendKey)
			note("Destinations "+s.FrontendKey.String(), err)
			slices.SortFunc(dests, func(a, b Destination) int { return a.AddrPort().Compare(b.AddrPort()) })
			for _, d := range dests {
				line += fmt.Sprintf(" -> %s w%d", d.AddrPort(), d.Weight)
			}
			out = append(out, line)
		}
	}
	a, a6, missing := key("172.30.0.1:80/TCP"), key("[fd00:96::1]:53/UDP"), key("172.30.0.9:80/TCP")
	d1 := Destination{Addr: netip.MustParseAddr("10.0.1.1"), Port: 8080, Weight: 1}
	d2 := Destination{Addr: netip.MustParseAddr("10.0.1.2"), Port: 8080, Weight: 1}
	note("AddService a", h.AddService(VirtualService{FrontendKey: a, Scheduler: "rr"}))
	note("AddService a again", h.AddService(VirtualService{FrontendKey: a, Scheduler: "rr"}))
	note("AddService a6", h.AddService(VirtualService{FrontendKey: a6, Scheduler: "mh", Flags: FlagSourceHash}))
	note("AddService unknown scheduler", h.AddService(VirtualService{FrontendKey: missing, Scheduler: "fastest"}))
	note("UpdateService a", h.UpdateService(VirtualService{FrontendKey: a, Scheduler: "sh", Flags: FlagPersistent, Timeout: 60}))
	note("UpdateService missing", h.UpdateService(VirtualService{FrontendKey: missing, Scheduler: "rr"}))
	note("DeleteService missing", h.DeleteService(missing))
	note("AddDestination a d1", h.AddDestination(a, d1))
	note("AddDestination a d1 again", h.AddDestination(a, d1))
	note("AddDestination a d2", h.AddDestination(a, d2))
	note("AddDestination missing", h.AddDestination(missing, d1))
	note("AddDestination a6", h.AddDestination(a6, Destination{Addr: netip.MustParseAddr("fd00:10::1"), Port: 5353, Weight: 1}))
	d2.Weight = 0
	note("UpdateDestination a d2 w0", h.UpdateDestination(a, d2))
	note("UpdateDestination a missing", h.UpdateDestination(a, Destination{Addr: netip.MustParseAddr("10.0.1.9"), Port: 1, Weight: 1}))
	note("DeleteDestination a missing", h.DeleteDestination(a, netip.MustParseAddrPort("10.0.1.9:1")))
	list()
	dests, err := h.Destinations(missing)
	note(fmt.Sprintf("Destinations missing (%d)", len(dests)), err)
	note("DeleteDestination a d1", h.DeleteDestination(a, d1.AddrPort()))
	note("DeleteService a", h.DeleteService(a))
	note("DeleteService a6", h.DeleteService(a6))
	list()
	return out
}

var wantIPVSSteps = []string{
	"AddService a: ok",
	"AddService a again: EEXIST",
	"AddService a6: ok",
	"AddService unknown scheduler: ENOENT",
	"UpdateService a: ok",
	"UpdateService missing: ESRCH",
	"DeleteService missing: ESRCH",
	"AddDestination a d1: ok",
	"AddDestination a d1 again: EEXIST",
	"AddDestination a d2: ok",
	"AddDestination missing: ESRCH",
	"AddDestination a6: ok",
	"UpdateDestination a d2 w0: ok",
	"UpdateDestination a missing: ENOENT",
	"DeleteDestination a missing: ENOENT",
	"Services: ok",
	"Destinations 172.30.0.1:80/TCP: ok",
	"  172.30.0.1:80/TCP sh flags=0x1 timeout=60 -> 10.0.1.1:8080 w1 -> 10.0.1.2:8080 w0",
	"Destinations [fd00:96::1]:53/UDP: ok",
	"  [fd00:96::1]:53/UDP mh flags=0x10 timeout=0 -> [fd00:10::1]:5353 w1",
	"Destinations missing (0): ok",
	"DeleteDestination a d1: ok",
	"DeleteService a: ok",
	"DeleteService a6: ok",
	"Services: ok",
}

func TestFakeIPVSSteps(t *testing.T) {
	if got := ipvsSteps(NewFakeIPVS()); !slices.Equal(got, wantIPVSSteps) {
		t.Errorf("the fake:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantIPVSSteps, "\n"))
	}
}

// linksSteps drives the device and its addresses; other is a device of the
// namespace that is not a dummy and has an address.
func linksSteps(l Links, other string) []string {
	var out []string
	note := func(what string, err error) {
		switch {
		case err == nil:
			out = append(out, what+": ok")
		case errors.Is(err, ErrNoDevice):
			out = append(out, what+": no device")
		default:
			out = append(out, what+": error")
		}
	}
	const dev = "sytest-ipvs0"
	a4, a6 := netip.MustParseAddr("172.30.0.1"), netip.MustParseAddr("fd00:96::1")
	addrs, err := l.Addrs(dev)
	note(fmt.Sprintf("Addrs before %v", addrs), err)
	note("AddAddr before", l.AddAddr(dev, a4))
	note("EnsureDummy", l.EnsureDummy(dev))
	note("EnsureDummy again", l.EnsureDummy(dev))
	note("EnsureDummy on a device that is not a dummy", l.EnsureDummy(other))
	note("AddAddr a4", l.AddAddr(dev, a4))
	note("AddAddr a4 again", l.AddAddr(dev, a4))
	note("AddAddr a6", l.AddAddr(dev, a6))
	addrs, err = l.Addrs(dev)
	note(fmt.Sprintf("Addrs %v", addrs), err)
	local, err := l.LocalAddrs(dev)
	note(fmt.Sprintf("LocalAddrs has a4 %v", slices.Contains(local, a4)), err)
	note("DelAddr a4", l.DelAddr(dev, a4))
	note("DelAddr a4 again", l.DelAddr(dev, a4))
	addrs, err = l.Addrs(dev)
	note(fmt.Sprintf("Addrs %v", addrs), err)
	note("DeleteDummy on a device that is not a dummy", l.DeleteDummy(other))
	note("DeleteDummy", l.DeleteDummy(dev))
	note("DeleteDummy again", l.DeleteDummy(dev))
	return out
}

var wantLinksSteps = []string{
	"Addrs before []: no device",
	"AddAddr before: no device",
	"EnsureDummy: ok",
	"EnsureDummy again: ok",
	"EnsureDummy on a device that is not a dummy: error",
	"AddAddr a4: ok",
	"AddAddr a4 again: ok",
	"AddAddr a6: ok",
	"Addrs [172.30.0.1 fd00:96::1]: ok",
	"LocalAddrs has a4 false: ok",
	"DelAddr a4: ok",
	"DelAddr a4 again: ok",
	"Addrs [fd00:96::1]: ok",
	"DeleteDummy on a device that is not a dummy: error",
	"DeleteDummy: ok",
	"DeleteDummy again: ok",
}

func TestFakeLinksSteps(t *testing.T) {
	l := NewFakeLinks(map[string][]netip.Addr{"eth0": {netip.MustParseAddr("192.168.0.2")}})
	if got := linksSteps(l, "eth0"); !slices.Equal(got, wantLinksSteps) {
		t.Errorf("the fake:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantLinksSteps, "\n"))
	}
}

func TestFakeIPVSInjectedFailures(t *testing.T) {
	f := NewFakeIPVS()
	f.FailNext(1)
	a := key("172.30.0.1:80/TCP")
	if err := f.AddService(VirtualService{FrontendKey: a, Scheduler: "rr"}); !errors.Is(err, ErrFakeIPVS) {
		t.Errorf("FailNext: %v", err)
	}
	if len(f.Dump()) != 0 {
		t.Errorf("a failed call changed the table: %v", f.Dump())
	}
	boom := errors.New("boom")
	f.FailKey(a, boom)
	if err := f.AddService(VirtualService{FrontendKey: a, Scheduler: "rr"}); !errors.Is(err, boom) {
		t.Errorf("FailKey: %v", err)
	}
	if err := f.AddService(VirtualService{FrontendKey: key("172.30.0.2:80/TCP"), Scheduler: "rr"}); err != nil {
		t.Errorf("another key: %v", err)
	}
}

func TestFileRecords(t *testing.T) {
	r := FileRecords{Path: t.TempDir() + "/sub/records"}
	if keys, err := r.Load(); err != nil || keys != nil {
		t.Errorf("missing file: %v, %v", keys, err)
	}
	keys := []dataplane.FrontendKey{key("192.168.0.2:80/TCP"), key("[2001:db8::2]:53/UDP"), key("10.0.0.1:9/SCTP")}
	if err := r.Store(keys); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Load(); err != nil || !slices.Equal(got, keys) {
		t.Errorf("Load after Store: %v, %v", got, err)
	}
	if err := r.Store(nil); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Load(); err != nil || got != nil {
		t.Errorf("after storing nothing: %v, %v", got, err)
	}
	for _, bad := range []string{"nonsense", "1.2.3.4/TCP", "1.2.3.4:80/ICMP"} {
		if _, err := parseKey(bad); err == nil {
			t.Errorf("parseKey(%q) accepted", bad)
		}
	}
}
