package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultModules are loaded at boot (with their dependencies): what IPVS, kube-proxy's iptables
// and nftables rules, ipset, the tc programs (clsact, cls_bpf, act_bpf), sock_diag destroy and the
// topologies (veth, dummy, bridge) use. Names the kernel builds in or lacks are skipped.
var DefaultModules = []string{
	"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_sh", "ip_vs_mh",
	"dummy", "veth", "bridge", "br_netfilter", "sctp",
	"nf_conntrack", "nf_conntrack_netlink", "nf_nat", "nfnetlink",
	"nf_tables", "nft_compat", "nft_chain_nat", "nft_ct", "nft_nat", "nft_masq", "nft_redir",
	"nft_reject_inet", "nft_reject_ipv4", "nft_reject_ipv6", "nft_fib_inet", "nft_fib_ipv4",
	"nft_fib_ipv6", "nft_numgen", "nft_hash", "nft_limit", "nft_counter", "nft_objref",
	"x_tables", "ip_tables", "ip6_tables", "iptable_nat", "iptable_filter", "iptable_mangle",
	"iptable_raw", "ip6table_nat", "ip6table_filter", "ip6table_mangle", "ip6table_raw",
	"xt_comment", "xt_mark", "xt_connmark", "xt_addrtype", "xt_statistic", "xt_recent",
	"xt_conntrack", "xt_MASQUERADE", "xt_nat", "xt_REDIRECT", "xt_tcpudp", "xt_multiport",
	"xt_set", "xt_physdev", "xt_CT", "xt_limit", "xt_sctp", "ipt_REJECT", "ip6t_REJECT",
	"ip_set", "ip_set_hash_ip", "ip_set_hash_ipport", "ip_set_hash_ipportip",
	"ip_set_hash_ipportnet", "ip_set_hash_net", "ip_set_bitmap_port",
	"sch_ingress", "cls_bpf", "act_bpf", "inet_diag", "tcp_diag", "udp_diag",
}

// shippedModules are in the guest for the kernel to load on demand (through busybox modprobe)
// but not loaded at boot: everything under kernel/net/ (as on a node, where every netfilter match
// and qdisc is a modprobe away), plus virtual devices.
var (
	shippedTrees   = []string{"kernel/net/"}
	shippedModules = []string{"macvlan", "ipvlan", "vxlan", "geneve", "tun", "ifb", "wireguard", "netkit", "bonding"}
)

// moduleParams are the parameters modules get: the dummy module would make a dummy0 device in
// the root namespace, which must have nothing but loopback.
var moduleParams = map[string]string{"dummy": "numdummies=0"}

// moduleSet is what the guest gets from a kernel's modules: the files to ship (relative to
// lib/modules/<release>, compressed as packaged) and the ones to load at boot, each in load order,
// and what was asked for but is built in or missing.
type moduleSet struct {
	ship    []string
	preload []string
	builtin []string
	missing []string
	dep     map[string][]string // file -> its dependencies (files), from modules.dep
	alias   []string            // modules.alias lines of the shipped modules
}

func modName(file string) string {
	base := filepath.Base(file)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		base = strings.TrimSuffix(base, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(base, ".ko"), "-", "_")
}

// resolveModules reads modules.dep, modules.alias and modules.builtin of dir: preload (names or
// aliases) with their dependencies first, and the shipped trees and modules on top.
func resolveModules(dir string, preload, trees, ship []string) (*moduleSet, error) {
	ms := &moduleSet{dep: map[string][]string{}}
	byName := map[string]string{}
	raw, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("modules.dep (was depmod run?): %w", err)
	}
	var all []string
	for _, line := range strings.Split(string(raw), "\n") {
		file, deps, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		all = append(all, file)
		ms.dep[file] = strings.Fields(deps)
		byName[modName(file)] = file
	}
	aliases := map[string]string{}
	var aliasLines [][3]string
	if raw, err := os.ReadFile(filepath.Join(dir, "modules.alias")); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "alias" {
				aliases[strings.ReplaceAll(f[1], "-", "_")] = f[2]
				aliasLines = append(aliasLines, [3]string{f[1], f[2], line})
			}
		}
	}
	builtin := map[string]bool{}
	if raw, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(raw)) {
			builtin[modName(line)] = true
		}
	}
	lookup := func(n string) (string, bool) {
		n = strings.ReplaceAll(n, "-", "_")
		file, ok := byName[n]
		if !ok {
			file, ok = byName[strings.ReplaceAll(aliases[n], "-", "_")]
		}
		return file, ok
	}
	ms.preload = closure(ms.dep, nil, func(visit func(string)) {
		for _, n := range preload {
			file, ok := lookup(n)
			switch {
			case ok:
				visit(file)
			case builtin[strings.ReplaceAll(n, "-", "_")]:
				ms.builtin = append(ms.builtin, n)
			default:
				ms.missing = append(ms.missing, n)
			}
		}
	})
	ms.ship = closure(ms.dep, ms.preload, func(visit func(string)) {
		for _, f := range all {
			for _, t := range trees {
				if strings.HasPrefix(f, t) {
					visit(f)
				}
			}
		}
		for _, n := range ship {
			if file, ok := lookup(n); ok {
				visit(file)
			}
		}
	})
	shipped := map[string]bool{}
	for _, f := range ms.ship {
		shipped[modName(f)] = true
	}
	for _, a := range aliasLines {
		if shipped[strings.ReplaceAll(a[1], "-", "_")] {
			ms.alias = append(ms.alias, a[2])
		}
	}
	return ms, nil
}

// closure lists, dependencies first, start and the files roots visits with all they depend on.
func closure(dep map[string][]string, start []string, roots func(visit func(string))) []string {
	out := append([]string{}, start...)
	seen := map[string]bool{}
	for _, f := range start {
		seen[f] = true
	}
	var visit func(string)
	visit = func(file string) {
		if seen[file] {
			return
		}
		seen[file] = true
		for _, d := range dep[file] {
			visit(d)
		}
		out = append(out, file)
	}
	roots(visit)
	return out
}

// uncompressed is a module's file name as the guest has it: busybox modprobe (and finit_module
// on kernels before 5.17) wants plain .ko files.
func uncompressed(file string) string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if s, ok := strings.CutSuffix(file, ext); ok {
			return s
		}
	}
	return file
}

// depFile is the guest's modules.dep: the shipped modules only, with uncompressed names.
func (ms *moduleSet) depFile() []byte {
	var b bytes.Buffer
	for _, f := range ms.ship {
		b.WriteString(uncompressed(f) + ":")
		for _, d := range ms.dep[f] {
			b.WriteString(" " + uncompressed(d))
		}
		b.WriteString("\n")
	}
	return b.Bytes()
}

// plainModule returns the path of the module as a plain .ko: the file itself, or a copy
// decompressed once into cacheDir (so a cached run forks no decompressor).
func plainModule(ctx context.Context, modDir, file, cacheDir string) (string, error) {
	src := filepath.Join(modDir, file)
	var tool string
	switch filepath.Ext(file) {
	case ".ko":
		return src, nil
	case ".xz":
		tool = "xz"
	case ".zst":
		tool = "zstd"
	case ".gz":
		tool = "gzip"
	default:
		return "", fmt.Errorf("%s: unknown module compression", file)
	}
	dst := filepath.Join(cacheDir, uncompressed(file))
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	bin, err := lookTool(tool)
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, bin, "-dc", src).Output()
	if err != nil {
		return "", fmt.Errorf("%s -dc %s: %w", tool, src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	return dst, writeFileAtomic(dst, out, 0o644)
}

// writeFileAtomic writes through a temporary file and a rename, so concurrent runs never see half
// a file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
