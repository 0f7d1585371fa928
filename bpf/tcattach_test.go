package bpf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/test/topology"
)

// These tests attach tc programs inside a simulated node (a network namespace of its own, built by
// the topology package, which also removes it and its bpffs directory when a run is killed). The
// attacher runs on an OS thread switched into the node's namespace; the traffic is a TCP connection
// from a pod to the node, which crosses the pod's veth. Nothing touches the root namespace.

const (
	tcNodeIP = "192.168.0.2"
	tcPod    = "p1"
	tcNProgs = 5
)

// tcEnv is one node with one pod, counting programs and a pin directory.
type tcEnv struct {
	topo   *topology.Topology
	dev    string // the pod's veth on the node: carries the probe's packets
	pinDir string
	counts *ebpf.Map
	// progs[i] counts the packets it sees in slot i of counts.
	progs []*ebpf.Program
}

func newTCEnv(t *testing.T) *tcEnv {
	t.Helper()
	topo := support.Build(t, topology.Scenario{
		Node: topology.Node{Name: "node-a", IPs: []string{tcNodeIP}},
		Pods: []topology.Pod{{Name: tcPod, IP: "10.0.1.1", Local: true}},
	})
	e := &tcEnv{topo: topo, dev: topo.PodHostIface(tcPod), pinDir: filepath.Join(bpffs, topo.Prefix()+"-tc")}
	// Runs before the topology's Close, which would remove the pins and namespaces anyway: this
	// checks that UnpinTC does.
	t.Cleanup(func() { e.close(t) })
	var err error
	e.counts, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: tcNProgs})
	if err != nil {
		t.Fatal(err)
	}
	for i := range tcNProgs {
		p, err := countingProgram(e.counts, uint32(i))
		if err != nil {
			t.Fatalf("load counting program: %v", err)
		}
		e.progs = append(e.progs, p)
	}
	return e
}

func (e *tcEnv) close(t *testing.T) {
	if err := e.inNode(func() error { return UnpinTC(e.pinDir) }); err != nil {
		t.Errorf("UnpinTC: %v", err)
	}
	if _, err := os.Stat(e.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory %s left after UnpinTC (%v)", e.pinDir, err)
	}
	for _, p := range e.progs {
		p.Close()
	}
	if e.counts != nil {
		e.counts.Close()
	}
}

// countingProgram adds one to slot of m per packet and returns TC_ACT_UNSPEC, so that the programs
// after it run too: a program attached twice, or a leftover, would count as well.
func countingProgram(m *ebpf.Map, slot uint32) (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, int64(slot), asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, -1).WithSymbol("out"),
			asm.Return(),
		},
	})
}

func (e *tcEnv) inNode(fn func() error) error { return topology.OnThreadIn(e.topo.NodeNS(), fn) }

// do runs fn in the node's namespace and fails the test if it fails.
func (e *tcEnv) do(t *testing.T, what string, fn func() error) {
	t.Helper()
	if err := e.inNode(fn); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func (e *tcEnv) ip(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.topo.Run(ctx, e.topo.NodeNS(), "ip", args...); err != nil {
		t.Fatal(err)
	}
}

// addVeth adds a veth pair with both ends in the node's namespace.
func (e *tcEnv) addVeth(t *testing.T, name, peer string) {
	t.Helper()
	e.ip(t, "link", "add", name, "type", "veth", "peer", "name", peer)
}

func requireTCX(t *testing.T) {
	t.Helper()
	ok, err := HaveTCX()
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		if !kernelAtLeast(6, 6) {
			t.Skip("TCX is in Linux 6.6+; on this kernel the backend attaches with clsact (the other tests)")
		}
		if os.Getenv("CI") == "true" {
			t.Fatal("a 6.6+ kernel without TCX")
		}
		t.Skip("a 6.6+ kernel without TCX")
	}
}

// ---- looking at what is attached ----

// countsAfterTraffic zeroes the counters, connects from the pod to the node (refused: nothing
// listens) and returns the counters.
func (e *tcEnv) countsAfterTraffic(t *testing.T) []uint64 {
	t.Helper()
	for i := range tcNProgs {
		if err := e.counts.Put(uint32(i), uint64(0)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := e.topo.Probe(ctx, e.topo.PodNS(tcPod), "tcp", tcNodeIP+":9", topology.ProbeOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Result != "refused" {
		t.Fatalf("probe from the pod to the node: %+v, want refused", res)
	}
	out := make([]uint64, tcNProgs)
	for i := range out {
		if err := e.counts.Lookup(uint32(i), &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// wantCounting checks that exactly the programs numbered in want saw packets.
func (e *tcEnv) wantCounting(t *testing.T, want ...int) {
	t.Helper()
	got := e.countsAfterTraffic(t)
	for i, n := range got {
		if (n > 0) != slices.Contains(want, i) {
			t.Errorf("packets seen per program %v: want only programs %v counting", got, want)
			return
		}
	}
}

func (e *tcEnv) progID(t *testing.T, i int) ebpf.ProgramID {
	t.Helper()
	info, err := e.progs[i].Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("no program id")
	}
	return id
}

// tcxProgs lists the TCX programs on dev in one direction, with their link ids, in run order.
func tcxProgs(dev string, attach ebpf.AttachType) ([]link.AttachedProgram, error) {
	nl, err := netlink.LinkByName(dev)
	if err != nil {
		return nil, err
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: nl.Attrs().Index, Attach: attach})
	if err != nil {
		return nil, fmt.Errorf("query %s on %s: %w", attach, dev, err)
	}
	return res.Programs, nil
}

// wantTCX checks that dev runs exactly the programs numbered want (by their ids) in the direction
// and returns their link ids.
func (e *tcEnv) wantTCX(t *testing.T, dev string, attach ebpf.AttachType, want ...int) []link.ID {
	t.Helper()
	var got []link.AttachedProgram
	e.do(t, "query", func() (err error) { got, err = tcxProgs(dev, attach); return err })
	var ids []ebpf.ProgramID
	var links []link.ID
	for _, p := range got {
		ids = append(ids, p.ID)
		l, _ := p.LinkID()
		links = append(links, l)
	}
	var wantIDs []ebpf.ProgramID
	for _, i := range want {
		wantIDs = append(wantIDs, e.progID(t, i))
	}
	if !slices.Equal(ids, wantIDs) {
		t.Fatalf("%s %s runs programs %v, want %v (programs %v)", dev, attach, ids, wantIDs, want)
	}
	return links
}

func (e *tcEnv) wantPins(t *testing.T, want ...string) {
	t.Helper()
	got, err := tcPins(e.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("pins %v, want %v", got, want)
	}
}

func (e *tcEnv) wantDevices(t *testing.T, a *TCAttacher, want ...string) {
	t.Helper()
	var got []string
	e.do(t, "Devices", func() (err error) { got, err = a.Devices(); return err })
	if !slices.Equal(got, want) {
		t.Fatalf("Devices() = %v, want %v", got, want)
	}
}

func newAttacher(t *testing.T, pinDir string, mode TCMode) *TCAttacher {
	t.Helper()
	a, err := NewTCAttacher(pinDir, mode)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("close attacher: %v", err)
		}
	})
	return a
}

func (e *tcEnv) set(t *testing.T, a *TCAttacher, dev string, progs ...TCProgram) {
	t.Helper()
	e.do(t, "Set "+dev, func() error { return a.Set(dev, progs) })
}

// ---- TCX ----

func TestTCXSetRestartRemove(t *testing.T) {
	e := newTCEnv(t)
	requireTCX(t)
	a := newAttacher(t, e.pinDir, TCAuto)
	if a.Mode() != TCX {
		t.Fatalf("auto mode on a kernel with TCX chose %q", a.Mode())
	}
	e.set(t, a, e.dev, TCProgram{"in", true, e.progs[0]}, TCProgram{"out", false, e.progs[1]})
	links := e.wantTCX(t, e.dev, ebpf.AttachTCXIngress, 0)
	e.wantTCX(t, e.dev, ebpf.AttachTCXEgress, 1)
	e.wantPins(t, tcPinName(e.dev, "in"), tcPinName(e.dev, "out"))
	e.wantCounting(t, 0, 1)
	e.wantDevices(t, a, e.dev)

	// The agent restarts: the programs stay, the next one switches the same link to its program
	// and detaches the one it no longer has.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	e.wantTCX(t, e.dev, ebpf.AttachTCXIngress, 0)
	b := newAttacher(t, e.pinDir, TCX)
	e.set(t, b, e.dev, TCProgram{"in", true, e.progs[2]})
	if got := e.wantTCX(t, e.dev, ebpf.AttachTCXIngress, 2); !slices.Equal(got, links) {
		t.Errorf("ingress link %v after the restart, want the same link %v updated in place", got, links)
	}
	e.wantTCX(t, e.dev, ebpf.AttachTCXEgress)
	e.wantPins(t, tcPinName(e.dev, "in"))
	e.wantCounting(t, 2)

	// Same name, other direction: a new link, the old one goes.
	e.set(t, b, e.dev, TCProgram{"in", false, e.progs[3]})
	e.wantTCX(t, e.dev, ebpf.AttachTCXIngress)
	e.wantTCX(t, e.dev, ebpf.AttachTCXEgress, 3)
	e.wantCounting(t, 3)

	e.do(t, "Remove", func() error { return b.Remove(e.dev) })
	e.wantTCX(t, e.dev, ebpf.AttachTCXEgress)
	e.wantPins(t)
	e.wantDevices(t, b)
	e.wantCounting(t)
}

func TestTCXPruneAndRecreatedDevice(t *testing.T) {
	e := newTCEnv(t)
	requireTCX(t)
	a := newAttacher(t, e.pinDir, TCX)
	va, vb := e.topo.Prefix()+"va", e.topo.Prefix()+"vb"
	// va_1's pins start with va's prefix: Remove and Prune must tell them apart.
	va1, vb1 := va+"_1", vb+"_1"
	e.addVeth(t, va, vb)
	e.addVeth(t, va1, vb1)
	e.set(t, a, e.dev, TCProgram{"in", true, e.progs[0]})
	e.set(t, a, va, TCProgram{"in", true, e.progs[1]})
	e.set(t, a, va1, TCProgram{"in", true, e.progs[2]})
	e.wantDevices(t, a, e.dev, va, va1)

	// Deleted and re-created under the same name: the pinned link is defunct.
	e.ip(t, "link", "del", va)
	e.addVeth(t, va, vb)
	e.wantDevices(t, a, e.dev, va1)
	e.set(t, a, va, TCProgram{"in", true, e.progs[3]})
	e.wantTCX(t, va, ebpf.AttachTCXIngress, 3)
	e.wantDevices(t, a, e.dev, va, va1)

	e.do(t, "Remove", func() error { return a.Remove(va) })
	e.wantTCX(t, va, ebpf.AttachTCXIngress)
	e.wantTCX(t, va1, ebpf.AttachTCXIngress, 2)
	e.wantPins(t, tcPinName(e.dev, "in"), tcPinName(va1, "in"))

	e.ip(t, "link", "del", va1)
	e.wantPins(t, tcPinName(e.dev, "in"), tcPinName(va1, "in")) // nothing has pruned yet
	e.do(t, "Prune", a.Prune)
	e.wantPins(t, tcPinName(e.dev, "in"))
	e.wantTCX(t, e.dev, ebpf.AttachTCXIngress, 0)
	e.wantCounting(t, 0)
}

func TestTCXWithoutPinDir(t *testing.T) {
	e := newTCEnv(t)
	requireTCX(t)
	a, err := NewTCAttacher("", TCX)
	if err != nil {
		t.Fatal(err)
	}
	e.set(t, a, e.dev, TCProgram{"in", true, e.progs[0]})
	e.set(t, a, e.dev, TCProgram{"in", true, e.progs[1]})
	e.wantTCX(t, e.dev, ebpf.AttachTCXIngress, 1)
	e.wantDevices(t, a, e.dev)
	e.wantCounting(t, 1)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	e.wantTCX(t, e.dev, ebpf.AttachTCXIngress)
	e.wantCounting(t)
}

func TestTCSetRejectsBadPrograms(t *testing.T) {
	a := &TCAttacher{mode: TCX, links: map[string]link.Link{}}
	for _, c := range []struct {
		dev   string
		progs []TCProgram
	}{
		{"", nil},
		{"a-name-that-is-too-long", nil},
		{"sy-absent", []TCProgram{{Name: "", Ingress: true}}},
		{"sy-absent", []TCProgram{{Name: "a/b", Ingress: true}}},
		{"sy-absent", []TCProgram{{Name: "in", Ingress: true}}}, // no program
	} {
		if err := a.Set(c.dev, c.progs); err == nil {
			t.Errorf("Set(%q, %+v) succeeded", c.dev, c.progs)
		}
	}
	if _, err := NewTCAttacher("", "bogus"); err == nil {
		t.Error("NewTCAttacher with mode bogus succeeded")
	}
}

// ---- clsact ----

// ourFilter is a switchyard filter as the kernel reports it.
type ourFilter struct {
	name     string
	prog     ebpf.ProgramID
	prio     uint16
	handle   uint32
	protocol uint16
	da       bool
}

// filters lists dev's bpf filters in one direction (parent).
func (e *tcEnv) filters(t *testing.T, dev string, parent uint32) []ourFilter {
	t.Helper()
	var out []ourFilter
	e.do(t, "list filters", func() error {
		nl, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		fs, err := netlink.FilterList(nl, parent)
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok {
				out = append(out, ourFilter{bf.Name, ebpf.ProgramID(bf.Id), bf.Priority, bf.Handle, bf.Protocol, bf.DirectAction})
			}
		}
		return err
	})
	return out
}

func TestTCClsactSetRestartSwitchModes(t *testing.T) {
	e := newTCEnv(t)
	requireTCX(t) // the mode switch below needs TCX too
	// Someone else's filter at priority 1 on ingress: ours must neither replace it nor remove it.
	e.do(t, "foreign filter", func() error {
		nl, err := netlink.LinkByName(e.dev)
		if err != nil {
			return err
		}
		if err := ensureClsact(nl); err != nil {
			return err
		}
		return netlink.FilterAdd(&netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: nl.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
				Priority: 1, Handle: 1, Protocol: unix.ETH_P_ALL},
			Fd: e.progs[4].FD(), Name: "other", DirectAction: true,
		})
	})
	foreign := ourFilter{"other", e.progID(t, 4), 1, 1, unix.ETH_P_ALL, true}

	a := newAttacher(t, e.pinDir, TCClsact)
	if a.Mode() != TCClsact {
		t.Fatalf("mode %q, want clsact", a.Mode())
	}
	e.set(t, a, e.dev, TCProgram{"in", true, e.progs[0]}, TCProgram{"out", false, e.progs[1]})
	in := ourFilter{"switchyard-in", e.progID(t, 0), 2, 1, unix.ETH_P_ALL, true}
	wantFilters(t, e.filters(t, e.dev, netlink.HANDLE_MIN_INGRESS), foreign, in)
	wantFilters(t, e.filters(t, e.dev, netlink.HANDLE_MIN_EGRESS),
		ourFilter{"switchyard-out", e.progID(t, 1), 1, 1, unix.ETH_P_ALL, true})
	e.wantTCX(t, e.dev, ebpf.AttachTCXIngress)
	e.wantPins(t)
	e.wantDevices(t, a, e.dev)
	e.wantCounting(t, 0, 1, 4)

	// Restart: replaced in place, the egress one removed.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := newAttacher(t, e.pinDir, TCClsact)
	e.set(t, b, e.dev, TCProgram{"in", true, e.progs[2]})
	in.prog = e.progID(t, 2)
	wantFilters(t, e.filters(t, e.dev, netlink.HANDLE_MIN_INGRESS), foreign, in)
	wantFilters(t, e.filters(t, e.dev, netlink.HANDLE_MIN_EGRESS))
	e.wantCounting(t, 2, 4)

	// To TCX and back: never both.
	c := newAttacher(t, e.pinDir, TCX)
	e.set(t, c, e.dev, TCProgram{"in", true, e.progs[3]})
	wantFilters(t, e.filters(t, e.dev, netlink.HANDLE_MIN_INGRESS), foreign)
	e.wantTCX(t, e.dev, ebpf.AttachTCXIngress, 3)
	e.wantCounting(t, 3, 4)
	e.set(t, b, e.dev, TCProgram{"in", true, e.progs[0]})
	e.wantTCX(t, e.dev, ebpf.AttachTCXIngress)
	e.wantPins(t)
	in.prog = e.progID(t, 0)
	wantFilters(t, e.filters(t, e.dev, netlink.HANDLE_MIN_INGRESS), foreign, in)

	e.do(t, "Remove", func() error { return b.Remove(e.dev) })
	wantFilters(t, e.filters(t, e.dev, netlink.HANDLE_MIN_INGRESS), foreign)
	e.set(t, b, e.dev, TCProgram{"in", true, e.progs[0]})
	e.do(t, "UnpinTC", func() error { return UnpinTC(e.pinDir) })
	wantFilters(t, e.filters(t, e.dev, netlink.HANDLE_MIN_INGRESS), foreign)
	e.wantCounting(t, 4)
}

func wantFilters(t *testing.T, got []ourFilter, want ...ourFilter) {
	t.Helper()
	sort.Slice(got, func(i, j int) bool { return got[i].prio < got[j].prio })
	if !slices.Equal(got, want) {
		t.Fatalf("filters %+v, want %+v", got, want)
	}
}
