package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultTools are the host programs copied into the guest when the host has them (with their
// libraries): what the tests run inside their namespaces. Busybox is always there too, for sh,
// modprobe, sysctl and the rest; the real tools here come first in PATH.
var DefaultTools = []string{
	"ip", "tc", "ss", "bridge", "nsenter", "unshare", "nft", "ipvsadm", "ipset", "conntrack",
	"tcpdump", "curl", "socat",
	"/usr/sbin/*tables*", "/usr/sbin/xtables-*", // iptables/ip6tables, nft and legacy, and their links
	"/usr/lib/x86_64-linux-gnu/xtables", // iptables extensions, loaded at run time
	"/etc/iproute2", "/etc/protocols", "/etc/services", "/etc/ethertypes",
}

// guestEtc are the files a minimal system needs for tools that look users and hosts up.
var guestEtc = map[string]string{
	"/etc/passwd":        "root:x:0:0:root:/root:/bin/sh\ntcpdump:x:101:101::/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
	"/etc/group":         "root:x:0:\ntcpdump:x:101:\nnogroup:x:65534:\n",
	"/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\nprotocols: files\nservices: files\n",
	"/etc/hosts":         "127.0.0.1 localhost\n::1 localhost\n",
	"/etc/hostname":      "vmrun\n",
}

// buildInitramfs assembles the guest's root file system.
func buildInitramfs(ctx context.Context, o *Options, p *plan, warn func(string, ...any)) (*archive, error) {
	a := newArchive()
	h := newHostFS(a, warn)
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/tmp", "/root", "/var/tmp", "/etc", "/mnt"} {
		a.addDir(d)
	}
	a.addCharDev("/dev/console", 5, 1)
	a.addCharDev("/dev/null", 1, 3)
	a.addSymlink("/var/run", "/run")
	a.addSymlink("/etc/mtab", "/proc/self/mounts")
	for name, body := range guestEtc {
		a.addData(name, []byte(body), 0o644)
	}
	if err := addInit(a, h, o.Init); err != nil {
		return nil, err
	}
	if err := addBusybox(ctx, a, h); err != nil {
		return nil, err
	}
	for _, t := range o.Tools {
		addTool(h, t, warn)
	}
	if err := addModules(ctx, a, h, o, p, warn); err != nil {
		return nil, err
	}
	for pkg, bin := range o.GoBuild {
		a.addFile(goBuildDir+"/"+goBuildName(pkg), bin, 0o755)
	}
	copies := append([]string{}, o.Copy...)
	for i, r := range o.Programs {
		guest := fmt.Sprintf("%s/%d/%s", guestBinDir, i, filepath.Base(r.Path))
		a.addFile(guest, r.Path, 0o755)
		if err := h.addNeeds(r.Path); err != nil { // a cgo test binary brings its libc
			return nil, err
		}
		dir := r.Dir
		if dir == "" {
			dir = o.Dir
		}
		a.addDir(h.canon(dir))
		if st, err := os.Stat(filepath.Join(dir, "testdata")); err == nil && st.IsDir() {
			copies = append(copies, filepath.Join(dir, "testdata"))
		}
		p.Runs = append(p.Runs, planRun{Path: guest, Args: r.Args, Dir: dir, Env: guestEnv(o.Env)})
	}
	for _, c := range copies {
		if err := copyTree(a, h, c); err != nil {
			return nil, err
		}
	}
	raw, err := json.MarshalIndent(p, "", " ")
	if err != nil {
		return nil, err
	}
	a.addData(planPath, raw, 0o644)
	return a, nil
}

// guestEnv is the programs' environment; SWITCHYARD_VM=1 tells tests they are in the guest (the
// IPVS kernel tests run only there).
func guestEnv(extra []string) []string {
	return append([]string{"PATH=" + guestPATH, "HOME=/root", "USER=root", "TMPDIR=/tmp", "TERM=dumb",
		"SWITCHYARD_VM=1"}, extra...)
}

// addInit makes the runner's own binary the guest's /init, and the `go` shim (a link to it).
func addInit(a *archive, h *hostFS, init string) error {
	if init == "" {
		return fmt.Errorf("no init binary (the vmrun binary itself)")
	}
	a.addFile("/init", init, 0o755)
	a.addSymlink(goShimPath, "/init")
	return h.addNeeds(init)
}

func addBusybox(ctx context.Context, a *archive, h *hostFS) error {
	bb, err := lookTool("busybox")
	if err != nil {
		return err
	}
	if err := h.add(bb); err != nil {
		return err
	}
	real, _ := filepath.EvalSymlinks(bb)
	list, err := run(ctx, "", bb, "--list")
	if err != nil {
		return err
	}
	for _, applet := range strings.Fields(list) {
		a.addSymlink(busyboxDir+"/"+applet, real)
	}
	// Scripts' /bin/sh is busybox, never the host's dash; the kernel runs /sbin/modprobe to load
	// modules on demand.
	for _, p := range []string{"/bin/sh", "/sbin/modprobe"} {
		a.addSymlink(h.canon(p), real)
		h.done[p], h.done[h.canon(p)] = true, true
	}
	return nil
}

// addTool adds a host program found in PATH, or every path a glob matches, or a directory tree;
// what the host lacks is left out.
func addTool(h *hostFS, t string, warn func(string, ...any)) {
	var paths []string
	if strings.HasPrefix(t, "/") {
		paths, _ = filepath.Glob(t)
	} else if p, err := lookTool(t); err == nil {
		paths = []string{p}
	}
	for _, p := range paths {
		if err := h.add(p); err != nil {
			warn("tool %s: %v", p, err)
		}
	}
}

// addModules adds the modules of the plan (plain .ko, with a modules.dep of just them, for
// busybox modprobe) and records their load order.
func addModules(ctx context.Context, a *archive, h *hostFS, o *Options, p *plan, warn func(string, ...any)) error {
	k := o.Kernel
	ms, err := resolveModules(k.ModulesDir(), o.Modules, shippedTrees, shippedModules)
	if err != nil {
		return err
	}
	if len(ms.missing) > 0 {
		warn("kernel %s has no module %s", k.Release, strings.Join(ms.missing, ", "))
	}
	guestDir := h.canon("/lib/modules/" + k.Release)
	for _, f := range ms.ship {
		src, err := plainModule(ctx, k.ModulesDir(), f, filepath.Join(k.Dir, "plain-modules"))
		if err != nil {
			return err
		}
		a.addFile(guestDir+"/"+uncompressed(f), src, 0o644)
	}
	for _, f := range ms.preload {
		plain := uncompressed(f)
		p.Modules = append(p.Modules, plain)
		for _, d := range ms.dep[f] {
			p.Deps[plain] = append(p.Deps[plain], uncompressed(d))
		}
		if params, ok := moduleParams[modName(f)]; ok {
			p.Params[plain] = params
		}
	}
	a.addData(guestDir+"/modules.dep", ms.depFile(), 0o644)
	a.addData(guestDir+"/modules.alias", []byte(strings.Join(ms.alias, "\n")+"\n"), 0o644)
	if _, err := os.Stat(filepath.Join(k.ModulesDir(), "modules.builtin")); err == nil {
		a.addFile(guestDir+"/modules.builtin", filepath.Join(k.ModulesDir(), "modules.builtin"), 0o644)
	}
	return nil
}

// copyTree copies a host file or directory to the same path in the guest, symlinks as they are.
func copyTree(a *archive, h *hostFS, root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		g := h.canon(p)
		switch {
		case d.IsDir():
			a.addDir(g)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			a.addSymlink(g, target)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			a.addFile(g, p, uint32(info.Mode().Perm()))
		}
		return nil
	})
}
