package bpf

// Attaching tc programs to network devices. With TCX (Linux 6.6+) every program is a bpf_link pinned
// in bpffs, so the programs stay attached while the agent restarts and the next agent switches the
// links to its own programs in place. Older kernels get cls_bpf filters on a clsact qdisc, which live
// on the device itself and are found again by name.

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TCMode is how tc programs are attached.
type TCMode string

const (
	// TCAuto picks TCX when the kernel has it, else clsact.
	TCAuto TCMode = "auto"
	// TCX attaches bpf_links (Linux 6.6+), pinned when the attacher has a pin directory.
	TCX TCMode = "tcx"
	// TCClsact adds cls_bpf filters (direct action) to a clsact qdisc.
	TCClsact TCMode = "clsact"
)

// TCProgram is one program for one direction of a device.
type TCProgram struct {
	// Name is short: it names the pin (tc_<device>_<name>) and the clsact filter (switchyard-<name>).
	// It must be unique among the programs of one device.
	Name    string
	Ingress bool          // else egress
	Program *ebpf.Program // of type SchedCLS
}

// Names of what the attacher leaves behind: pins in its pin directory, filters on devices.
const (
	tcPinPrefix    = "tc_"
	tcFilterPrefix = "switchyard-"
)

func tcPinName(dev, prog string) string { return tcPinPrefix + dev + "_" + prog }

// tcDevPrefix starts the pin names of dev. A pin with this prefix may still belong to another device
// whose name continues with "_" (eth and eth_1): live links are told apart by their ifindex.
func tcDevPrefix(dev string) string { return tcPinName(dev, "") }

// TCAttacher attaches tc programs to the devices of the current network namespace. Its methods run
// netlink and bpf calls in the calling thread's namespace, and are safe for concurrent use.
type TCAttacher struct {
	mu     sync.Mutex
	pinDir string
	mode   TCMode
	// links holds the TCX links of an attacher without pin directory, by pin name: their file
	// descriptors are all that keeps them attached.
	links map[string]link.Link
}

// NewTCAttacher returns an attacher that pins its TCX links in pinDir (on bpffs; created if missing),
// or pins nothing when pinDir is "" (the links then go with Close). TCAuto probes the kernel for
// TCX once, here.
func NewTCAttacher(pinDir string, mode TCMode) (*TCAttacher, error) {
	a := &TCAttacher{pinDir: pinDir, links: map[string]link.Link{}}
	var err error
	if a.mode, err = resolveTCMode(mode); err != nil {
		return nil, err
	}
	if pinDir != "" {
		if err := checkPinDir(pinDir); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func resolveTCMode(mode TCMode) (TCMode, error) {
	switch mode {
	case TCClsact:
		return mode, nil
	case TCX, TCAuto, "":
		ok, err := HaveTCX()
		if err != nil {
			return "", err
		}
		if ok {
			return TCX, nil
		}
		if mode == TCX {
			return "", errors.New("bpf: tc mode tcx: the kernel has no TCX (Linux 6.6+); use clsact")
		}
		return TCClsact, nil
	}
	return "", fmt.Errorf("bpf: unknown tc mode %q (want auto, tcx or clsact)", mode)
}

func checkPinDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bpf: tc pin directory: %w", err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return fmt.Errorf("bpf: tc pin directory: %w", err)
	}
	if fs.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("bpf: tc pin directory %s is not on bpffs", dir)
	}
	return nil
}

// HaveTCX tells whether the kernel has TCX. It tries to attach a trivial program to an ifindex that
// cannot exist: a kernel with TCX checks the attach type first and then says ENODEV, so nothing is
// ever attached anywhere.
func HaveTCX() (bool, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return false, fmt.Errorf("bpf: probe tcx: load a tc program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: math.MaxInt32, Program: prog, Attach: ebpf.AttachTCXIngress})
	switch {
	case errors.Is(err, unix.ENODEV):
		return true, nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return false, nil
	case err == nil:
		return false, errors.Join(errors.New("bpf: probe tcx: attached to ifindex MaxInt32"), l.Close())
	}
	return false, fmt.Errorf("bpf: probe tcx: %w", err)
}

// Mode is the mode in use: TCX or TCClsact.
func (a *TCAttacher) Mode() TCMode { return a.mode }

// Set makes dev (a device of the current netns) carry exactly progs: it attaches the new ones,
// switches those already attached by this attacher (or by an earlier process with the same pin
// directory) to the given program in place, so the device never goes without, and detaches the
// programs it attached that are not in progs any more.
func (a *TCAttacher) Set(dev string, progs []TCProgram) error {
	if err := checkTCPrograms(dev, progs); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	nl, err := netlink.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("bpf: tc (%s) on %s: %w", a.mode, dev, err)
	}
	if a.mode == TCX {
		err = a.setTCX(nl, progs)
	} else {
		err = a.setClsact(nl, progs)
	}
	if err != nil {
		return fmt.Errorf("bpf: tc (%s) on %s: %w", a.mode, dev, err)
	}
	return nil
}

func checkTCPrograms(dev string, progs []TCProgram) error {
	if dev == "" || len(dev) >= unix.IFNAMSIZ || strings.ContainsAny(dev, "/:") {
		return fmt.Errorf("bpf: tc: bad device name %q", dev)
	}
	seen := map[string]bool{}
	for _, p := range progs {
		switch {
		case p.Name == "" || strings.Contains(p.Name, "/"):
			return fmt.Errorf("bpf: tc on %s: bad program name %q", dev, p.Name)
		case seen[p.Name]:
			return fmt.Errorf("bpf: tc on %s: program name %q used twice", dev, p.Name)
		case p.Program == nil || p.Program.Type() != ebpf.SchedCLS:
			return fmt.Errorf("bpf: tc on %s: program %s is not a SchedCLS program", dev, p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}

// setTCX attaches progs as TCX links, then removes what is left of earlier runs.
func (a *TCAttacher) setTCX(nl netlink.Link, progs []TCProgram) error {
	dev, ifindex := nl.Attrs().Name, nl.Attrs().Index
	keep := map[string]bool{}
	for _, p := range progs {
		name := tcPinName(dev, p.Name)
		keep[name] = true
		if err := a.ensureTCX(name, ifindex, p); err != nil {
			return fmt.Errorf("program %s: %w", p.Name, err)
		}
	}
	// Only now: a program renamed between two versions is replaced without a gap.
	if err := a.dropTCX(dev, ifindex, keep); err != nil {
		return err
	}
	// Filters of an earlier run in clsact mode would run after our links, a second time.
	return deleteFilters(nl, nil)
}

// ensureTCX updates the link named name to p when it is on this device in this direction, and
// attaches a new one otherwise.
func (a *TCAttacher) ensureTCX(name string, ifindex int, p TCProgram) error {
	l, err := a.loadLink(name)
	if err != nil {
		return err
	}
	if l != nil {
		done, err := a.takeOverTCX(name, l, ifindex, p)
		if done || err != nil {
			return err
		}
	}
	l, err = link.AttachTCX(link.TCXOptions{
		Interface: ifindex, Program: p.Program, Attach: tcxAttachType(p.Ingress),
		// Before other programs on the device (a CNI's policy or redirect): services must be
		// translated whatever those decide, as kube-proxy's DNAT comes first in PREROUTING.
		// An update keeps this position.
		Anchor: link.Head(),
	})
	if err != nil {
		return fmt.Errorf("attach tcx: %w", err)
	}
	return a.keep(name, l)
}

func tcxAttachType(ingress bool) ebpf.AttachType {
	if ingress {
		return ebpf.AttachTCXIngress
	}
	return ebpf.AttachTCXEgress
}

// takeOverTCX switches l to p in place when l is attached to ifindex in p's direction (done), and
// detaches it otherwise: a defunct link (its device was deleted, maybe re-created under the same
// name) or one of the other direction.
func (a *TCAttacher) takeOverTCX(name string, l link.Link, ifindex int, p TCProgram) (done bool, err error) {
	idx, attach, err := tcxTarget(l)
	if err != nil {
		return false, errors.Join(fmt.Errorf("link %s: %w", name, err), a.release(l))
	}
	if idx == ifindex && attach == tcxAttachType(p.Ingress) {
		err := l.Update(p.Program)
		if err == nil {
			return true, a.release(l)
		}
		// ENOLINK: the device went away after the check; the new attach will say so.
		if !errors.Is(err, unix.ENOLINK) {
			return false, errors.Join(fmt.Errorf("update link %s: %w", name, err), a.release(l))
		}
	}
	return false, a.drop(name, l)
}

// tcxTarget is the ifindex (0 once its device is gone) and attach type of a TCX link.
func tcxTarget(l link.Link) (int, ebpf.AttachType, error) {
	info, err := l.Info()
	if err != nil {
		return 0, 0, err
	}
	tcx := info.TCX()
	if tcx == nil {
		return 0, 0, fmt.Errorf("not a tcx link (type %d)", info.Type)
	}
	return int(tcx.Ifindex), ebpf.AttachType(tcx.AttachType), nil
}

// dropTCX detaches the links of dev (with ifindex, 0 if dev is gone) whose names are not in keep.
// Defunct links with dev's prefix go too: they carry nothing, whichever device they were for.
func (a *TCAttacher) dropTCX(dev string, ifindex int, keep map[string]bool) error {
	names, err := a.linkNames()
	if err != nil {
		return err
	}
	for _, name := range names {
		if keep[name] || !strings.HasPrefix(name, tcDevPrefix(dev)) {
			continue
		}
		l, err := a.loadLink(name)
		if err != nil {
			return err
		}
		if l == nil {
			continue // unpinned meanwhile
		}
		idx, _, err := tcxTarget(l)
		if err == nil && idx != 0 && idx != ifindex {
			err = a.release(l) // live on another device, one named dev_...
		} else {
			err = a.drop(name, l)
		}
		if err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
	}
	return nil
}

// ---- where the TCX links are kept: pins, or this attacher's memory ----

func (a *TCAttacher) pinPath(name string) string { return filepath.Join(a.pinDir, name) }

// loadLink opens the link named name, or returns nil when there is none.
func (a *TCAttacher) loadLink(name string) (link.Link, error) {
	if a.pinDir == "" {
		return a.links[name], nil
	}
	l, err := link.LoadPinnedLink(a.pinPath(name), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load pinned link %s: %w", name, err)
	}
	return l, nil
}

// keep records a new link: pinned (and its fd closed) or held in memory.
func (a *TCAttacher) keep(name string, l link.Link) error {
	if a.pinDir == "" {
		a.links[name] = l
		return nil
	}
	if err := l.Pin(a.pinPath(name)); err != nil {
		return errors.Join(fmt.Errorf("pin link %s: %w", name, err), l.Close())
	}
	return l.Close()
}

// release is done with a link loaded by loadLink.
func (a *TCAttacher) release(l link.Link) error {
	if a.pinDir == "" {
		return nil
	}
	return l.Close()
}

// drop detaches l and forgets it. Detach first: the program stops even if another process still
// holds the link open.
func (a *TCAttacher) drop(name string, l link.Link) error {
	err := l.Detach()
	if errors.Is(err, ebpf.ErrNotSupported) {
		err = nil // unpinned and closed, it detaches all the same
	}
	if a.pinDir == "" {
		delete(a.links, name)
	} else if rerr := os.Remove(a.pinPath(name)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return errors.Join(err, l.Close())
}

// linkNames lists the names of this attacher's links, sorted.
func (a *TCAttacher) linkNames() ([]string, error) {
	var names []string
	if a.pinDir == "" {
		for n := range a.links {
			names = append(names, n)
		}
		sort.Strings(names)
		return names, nil
	}
	return tcPins(a.pinDir)
}

// tcPins lists the tc pins in dir (none if dir does not exist).
func tcPins(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tc pins: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tcPinPrefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// ---- clsact ----

// setClsact installs progs as filters, then removes what is left of earlier runs.
func (a *TCAttacher) setClsact(nl netlink.Link, progs []TCProgram) error {
	if err := ensureClsact(nl); err != nil {
		return err
	}
	keep := map[filterKey]bool{}
	for _, p := range progs {
		key := filterKey{tcParent(p.Ingress), tcFilterPrefix + p.Name}
		keep[key] = true
		if err := replaceFilter(nl, key, p.Program); err != nil {
			return fmt.Errorf("program %s: %w", p.Name, err)
		}
	}
	if err := deleteFilters(nl, keep); err != nil {
		return err
	}
	// Links of an earlier run in tcx mode would run before our filters, a second time.
	return a.dropTCX(nl.Attrs().Name, nl.Attrs().Index, nil)
}

type filterKey struct {
	parent uint32
	name   string
}

func tcParent(ingress bool) uint32 {
	if ingress {
		return netlink.HANDLE_MIN_INGRESS
	}
	return netlink.HANDLE_MIN_EGRESS
}

// ensureClsact adds a clsact qdisc unless dev has one: an existing one is left alone, since other
// programs may hang off it.
func ensureClsact(nl netlink.Link) error {
	qdiscs, err := netlink.QdiscList(nl)
	if err != nil {
		return fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qdiscs {
		switch q.Type() {
		case "clsact":
			return nil
		case "ingress":
			// Replacing it would delete its filters, which are someone else's.
			return errors.New("the device has an ingress qdisc; clsact would replace it")
		}
	}
	err = netlink.QdiscReplace(&netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: nl.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	})
	if err != nil {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	return nil
}

// replaceFilter points our filter key at prog: in place (same priority and handle) when it
// exists, else at the first priority nobody uses, so no one else's filter is replaced.
func replaceFilter(nl netlink.Link, key filterKey, prog *ebpf.Program) error {
	filters, err := netlink.FilterList(nl, key.parent)
	if err != nil {
		return fmt.Errorf("list filters: %w", err)
	}
	prio, handle := freePriority(filters), uint32(1)
	if f := findFilter(filters, key.name); f != nil {
		prio, handle = f.Priority, f.Handle
	}
	err = netlink.FilterReplace(&netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: nl.Attrs().Index, Parent: key.parent, Priority: prio, Handle: handle,
			// netlink converts to network byte order itself.
			Protocol: unix.ETH_P_ALL,
		},
		Fd: prog.FD(), Name: key.name, DirectAction: true,
	})
	if err != nil {
		return fmt.Errorf("replace filter %s: %w", key.name, err)
	}
	return nil
}

func findFilter(filters []netlink.Filter, name string) *netlink.BpfFilter {
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == name {
			return bf
		}
	}
	return nil
}

// freePriority is the lowest priority (first to run) that no filter of the parent uses.
func freePriority(filters []netlink.Filter) uint16 {
	used := map[uint16]bool{}
	for _, f := range filters {
		used[f.Attrs().Priority] = true
	}
	prio := uint16(1)
	for used[prio] {
		prio++
	}
	return prio
}

// ourFilters lists the filters named switchyard-* on both directions of a device.
func ourFilters(nl netlink.Link) ([]*netlink.BpfFilter, error) {
	var out []*netlink.BpfFilter
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := netlink.FilterList(nl, parent)
		if err != nil {
			return nil, fmt.Errorf("list filters: %w", err)
		}
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, tcFilterPrefix) {
				out = append(out, bf)
			}
		}
	}
	return out, nil
}

// deleteFilters deletes our filters on a device except those in keep.
func deleteFilters(nl netlink.Link, keep map[filterKey]bool) error {
	filters, err := ourFilters(nl)
	if err != nil {
		return err
	}
	for _, f := range filters {
		if keep[filterKey{f.Parent, f.Name}] {
			continue
		}
		if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete filter %s: %w", f.Name, err)
		}
	}
	return nil
}

// ---- whole devices ----

// Remove detaches everything this attacher, or an earlier process with the same pin directory, put
// on dev, and removes the pins. A device that is gone is not an error.
func (a *TCAttacher) Remove(dev string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	nl, err := linkByName(dev)
	if err != nil {
		return fmt.Errorf("bpf: tc remove from %s: %w", dev, err)
	}
	ifindex := 0
	if nl != nil {
		ifindex = nl.Attrs().Index
		if err := deleteFilters(nl, nil); err != nil {
			return fmt.Errorf("bpf: tc remove from %s: %w", dev, err)
		}
	}
	if err := a.dropTCX(dev, ifindex, nil); err != nil {
		return fmt.Errorf("bpf: tc remove from %s: %w", dev, err)
	}
	return nil
}

// linkByName is netlink.LinkByName with nil, nil for a device that does not exist.
func linkByName(dev string) (netlink.Link, error) {
	nl, err := netlink.LinkByName(dev)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	return nl, err
}

// linkByIndex is netlink.LinkByIndex with nil, nil for a device that does not exist.
func linkByIndex(ifindex int) (netlink.Link, error) {
	nl, err := netlink.LinkByIndex(ifindex)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) || errors.Is(err, unix.ENODEV) {
		return nil, nil
	}
	return nl, err
}

// Prune detaches and unpins the links whose device is gone: deleted, or deleted and re-created
// under the same name (a new ifindex; the old link is defunct), or renamed. Filters need no pruning:
// they go with their device.
func (a *TCAttacher) Prune() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	names, err := a.linkNames()
	if err != nil {
		return fmt.Errorf("bpf: tc prune: %w", err)
	}
	for _, name := range names {
		if err := a.pruneLink(name); err != nil {
			return fmt.Errorf("bpf: tc prune %s: %w", name, err)
		}
	}
	return nil
}

func (a *TCAttacher) pruneLink(name string) error {
	l, err := a.loadLink(name)
	if err != nil || l == nil {
		return err
	}
	dev, err := linkDevice(l)
	if err != nil {
		return errors.Join(err, a.release(l))
	}
	if dev != "" && strings.HasPrefix(name, tcDevPrefix(dev)) {
		return a.release(l)
	}
	return a.drop(name, l)
}

// linkDevice is the name of the device a TCX link is attached to, "" if it is defunct.
func linkDevice(l link.Link) (string, error) {
	idx, _, err := tcxTarget(l)
	if err != nil || idx == 0 {
		return "", err
	}
	nl, err := linkByIndex(idx)
	if err != nil || nl == nil {
		return "", err
	}
	return nl.Attrs().Name, nil
}

// Devices lists, sorted, the devices that carry links or filters of this attacher (or of an earlier
// process with the same pin directory). Defunct links are Prune's business, not listed.
func (a *TCAttacher) Devices() ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	set := map[string]bool{}
	if err := a.linkDevices(set); err != nil {
		return nil, fmt.Errorf("bpf: tc devices: %w", err)
	}
	if err := filterDevices(set); err != nil {
		return nil, fmt.Errorf("bpf: tc devices: %w", err)
	}
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out, nil
}

func (a *TCAttacher) linkDevices(set map[string]bool) error {
	names, err := a.linkNames()
	if err != nil {
		return err
	}
	for _, name := range names {
		l, err := a.loadLink(name)
		if err != nil {
			return err
		}
		if l == nil {
			continue // unpinned meanwhile
		}
		dev, err := linkDevice(l)
		if err = errors.Join(err, a.release(l)); err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
		if dev != "" && strings.HasPrefix(name, tcDevPrefix(dev)) {
			set[dev] = true
		}
	}
	return nil
}

func filterDevices(set map[string]bool) error {
	links, err := linkList()
	if err != nil {
		return err
	}
	for _, nl := range links {
		filters, err := ourFilters(nl)
		if err != nil && !isGone(err) {
			return fmt.Errorf("%s: %w", nl.Attrs().Name, err)
		}
		if len(filters) > 0 {
			set[nl.Attrs().Name] = true
		}
	}
	return nil
}

// isGone tells an error about a device deleted while we looked at it.
func isGone(err error) bool {
	var notFound netlink.LinkNotFoundError
	return errors.As(err, &notFound) || errors.Is(err, unix.ENODEV)
}

// Close closes the attacher's file descriptors. Pinned links and filters stay, and their programs
// with them; the links of an attacher without pin directory are detached.
func (a *TCAttacher) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for name, l := range a.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("bpf: tc close link %s: %w", name, err))
		}
		delete(a.links, name)
	}
	return errors.Join(errs...)
}

// UnpinTC detaches and unpins every tc link pinned in pinDir, deletes every filter named
// switchyard-* on every device of the current netns, and removes pinDir if that leaves it empty.
// Missing things are not errors. It is `switchyard cleanup`'s part for tc.
func UnpinTC(pinDir string) error {
	if err := unpinTCLinks(pinDir); err != nil {
		return fmt.Errorf("bpf: unpin tc: %w", err)
	}
	if err := deleteAllFilters(); err != nil {
		return fmt.Errorf("bpf: unpin tc: %w", err)
	}
	if pinDir == "" {
		return nil
	}
	err := os.Remove(pinDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("bpf: unpin tc: %w", err)
	}
	return nil
}

func unpinTCLinks(pinDir string) error {
	if pinDir == "" {
		return nil
	}
	names, err := tcPins(pinDir)
	if err != nil {
		return err
	}
	a := &TCAttacher{pinDir: pinDir}
	for _, name := range names {
		l, err := a.loadLink(name)
		if err == nil && l != nil {
			err = a.drop(name, l)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func deleteAllFilters() error {
	links, err := linkList()
	if err != nil {
		return err
	}
	for _, nl := range links {
		if err := deleteFilters(nl, nil); err != nil && !isGone(err) {
			return fmt.Errorf("%s: %w", nl.Attrs().Name, err)
		}
	}
	return nil
}
