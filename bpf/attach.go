package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// hook is one program of sock.c and where it attaches.
type hook struct {
	name   string
	attach ebpf.AttachType
	prog   func(*sockPrograms) *ebpf.Program
}

var hooks = []hook{
	{"connect4", ebpf.AttachCGroupInet4Connect, func(p *sockPrograms) *ebpf.Program { return p.Connect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(p *sockPrograms) *ebpf.Program { return p.Connect6 }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(p *sockPrograms) *ebpf.Program { return p.Sendmsg4 }},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(p *sockPrograms) *ebpf.Program { return p.Sendmsg6 }},
	{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, func(p *sockPrograms) *ebpf.Program { return p.Recvmsg4 }},
	{"recvmsg6", ebpf.AttachCGroupUDP6Recvmsg, func(p *sockPrograms) *ebpf.Program { return p.Recvmsg6 }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(p *sockPrograms) *ebpf.Program { return p.Getpeername4 }},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(p *sockPrograms) *ebpf.Program { return p.Getpeername6 }},
}

func linkPinName(prog string) string { return "link_" + prog }

type attached struct {
	name string
	link link.Link
}

// Attach attaches every program to the cgroup v2 directory cgroupPath. With a PinDir, the links are
// pinned there, and links already pinned there are switched to this Load's programs in place
// (BPF_LINK_UPDATE), so a restarted agent takes over without a moment in which sockets go
// untranslated. A pinned link that belongs to another cgroup (or to one that was removed) is
// replaced by a new one.
func (o *Objects) Attach(cgroupPath string) error {
	if len(o.links) > 0 {
		return errors.New("bpf: already attached")
	}
	cgID, err := cgroupID(cgroupPath)
	if err != nil {
		return err
	}
	for _, h := range hooks {
		l, err := o.attachOne(h, cgroupPath, cgID)
		if err != nil {
			// Links made so far stay pinned (and attached): the previous agent's state is
			// no worse, and the next Attach updates them.
			return fmt.Errorf("bpf: attach %s to %s: %w", h.name, cgroupPath, err)
		}
		o.links = append(o.links, attached{h.name, l})
	}
	return nil
}

func (o *Objects) attachOne(h hook, cgroupPath string, cgID uint64) (link.Link, error) {
	prog := h.prog(&o.objs.sockPrograms)
	pin := ""
	if o.pinDir != "" {
		pin = filepath.Join(o.pinDir, linkPinName(h.name))
		l, err := o.takeOver(pin, h, cgID, prog)
		if l != nil || err != nil {
			return l, err
		}
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: h.attach, Program: prog})
	if err != nil {
		return nil, err
	}
	if pin != "" {
		if err := l.Pin(pin); err != nil {
			l.Close()
			return nil, fmt.Errorf("pin link (needs bpf_link support for cgroups, Linux 5.7+): %w", err)
		}
	}
	return l, nil
}

// takeOver updates the link pinned at pin to prog when it is this hook's link on this cgroup. It
// returns nil, nil when there is nothing to take over (the stale pin is removed then).
func (o *Objects) takeOver(pin string, h hook, cgID uint64, prog *ebpf.Program) (link.Link, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	info, err := l.Info()
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("pinned link %s: %w", pin, err)
	}
	if cg := info.Cgroup(); cg != nil && cg.CgroupId == cgID && ebpf.AttachType(cg.AttachType) == h.attach {
		if err := l.Update(prog); err != nil {
			l.Close()
			return nil, fmt.Errorf("update pinned link %s: %w", pin, err)
		}
		return l, nil
	}
	// Attached elsewhere (another --cgroup-root) or defunct: detach it and attach anew.
	err = errors.Join(l.Unpin(), l.Close())
	if err != nil {
		return nil, fmt.Errorf("replace pinned link %s: %w", pin, err)
	}
	return nil, nil
}

// cgroupID is what the kernel reports as a cgroup link's cgroup: the directory's inode number on
// cgroup2 (kernfs node id).
func cgroupID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("bpf: cgroup %s: %w", path, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, fmt.Errorf("bpf: cgroup %s: %w", path, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("bpf: %s is not on a cgroup v2 file system", path)
	}
	return st.Ino, nil
}

// Probe checks the kernel features the socket load balancer needs and names every one missing.
func Probe() error {
	progType := features.HaveProgramType(ebpf.CGroupSockAddr)
	if progType != nil && !errors.Is(progType, ebpf.ErrNotSupported) {
		// Typically EPERM: not root (CAP_BPF, CAP_NET_ADMIN). Every other probe would say the same.
		return fmt.Errorf("bpf: cannot probe the kernel: %w", progType)
	}
	var missing []string
	var errs []error
	check := func(what string, err error) {
		switch {
		case err == nil:
		case errors.Is(err, ebpf.ErrNotSupported):
			missing = append(missing, what)
		default:
			errs = append(errs, fmt.Errorf("probing %s: %w", what, err))
		}
	}
	check("cgroup sock_addr programs (BPF_PROG_TYPE_CGROUP_SOCK_ADDR)", progType)
	check("hash maps", features.HaveMapType(ebpf.Hash))
	check("LRU hash maps", features.HaveMapType(ebpf.LRUHash))
	if progType == nil {
		for _, h := range []struct {
			name string
			fn   asm.BuiltinFunc
		}{
			{"bpf_get_netns_cookie", asm.FnGetNetnsCookie},
			{"bpf_get_socket_cookie", asm.FnGetSocketCookie},
			{"bpf_set_retval", asm.FnSetRetval},
			{"bpf_loop", asm.FnLoop},
			{"bpf_get_prandom_u32", asm.FnGetPrandomU32},
			{"bpf_ktime_get_ns", asm.FnKtimeGetNs},
		} {
			check(h.name+" in cgroup sock_addr programs", features.HaveProgramHelper(ebpf.CGroupSockAddr, h.fn))
		}
	}
	probeTC(check)
	if len(missing) > 0 {
		errs = append([]error{fmt.Errorf("the kernel lacks %s", strings.Join(missing, ", "))}, errs...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("bpf: the eBPF dataplane is unavailable: %w", errors.Join(errs...))
	}
	return nil
}

// MountBPFFS mounts bpffs at path unless one is mounted there already.
func MountBPFFS(path string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err == nil && fs.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("bpf: bpffs mount point: %w", err)
	}
	if err := unix.Mount("bpf", path, "bpf", 0, "mode=0700"); err != nil {
		if errors.Is(err, unix.EPERM) {
			// The DaemonSet grants no CAP_SYS_ADMIN, and a bpffs mounted inside
			// the pod would die with it (Bidirectional propagation needs a
			// privileged container): the node must provide one, as systemd does.
			return fmt.Errorf("bpf: no bpffs at %s, and mounting one was refused (%w): mount bpffs on the node "+
				"(mount -t bpf bpf /sys/fs/bpf; systemd does at boot) and give the agent the node's /sys/fs/bpf", path, err)
		}
		return fmt.Errorf("bpf: mount bpffs at %s: %w", path, err)
	}
	return nil
}

// probeTC checks what the tc programs (tc.c) need.
func probeTC(check func(string, error)) {
	tcType := features.HaveProgramType(ebpf.SchedCLS)
	check("tc programs (BPF_PROG_TYPE_SCHED_CLS)", tcType)
	check("LPM trie maps", features.HaveMapType(ebpf.LPMTrie))
	check("per-CPU array maps", features.HaveMapType(ebpf.PerCPUArray))
	if tcType != nil {
		return
	}
	for _, h := range []struct {
		name string
		fn   asm.BuiltinFunc
	}{
		{"bpf_fib_lookup", asm.FnFibLookup},
		{"bpf_redirect_neigh", asm.FnRedirectNeigh},
		{"bpf_skb_adjust_room", asm.FnSkbAdjustRoom},
		{"bpf_skb_change_tail", asm.FnSkbChangeTail},
		{"bpf_csum_diff", asm.FnCsumDiff},
	} {
		check(h.name+" in tc programs", features.HaveProgramHelper(ebpf.SchedCLS, h.fn))
	}
}
