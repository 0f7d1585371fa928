package image

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
)

// The Debian packages the tools come from. Their library dependencies are
// added by resolvePackages; the ELF closure then takes only the files needed.
var (
	// agentPackages: iptables (both variants), nft, modprobe, and netbase's
	// /etc/protocols and /etc/services, which iptables and nft read to name
	// protocols and ports.
	agentPackages = []string{"iptables", "kmod", "netbase", "nftables"}
	// kubeProxyPackages: ipset, which kube-proxy's IPVS mode runs.
	kubeProxyPackages = []string{"ipset"}
)

const (
	sbin       = "/usr/sbin"
	xtablesDir = "/usr/lib/x86_64-linux-gnu/xtables"
)

// agentTools are the programs Switchyard's modes run (grep exec.Command and
// LookPath in netfilter/ and ipvs/): iptables-<variant>-save and -restore for
// both families and variants (netfilter/exec.go's toolName), iptables-<variant>
// itself (go-iptables, netfilter/jumps.go), nft (netfilter/chains.go), and
// modprobe (moby/ipvs runs `modprobe -va ip_vs` in IPVS mode, and
// iptables-legacy runs it to load its table modules). The Debian names are
// symlinks to xtables-legacy-multi and xtables-nft-multi, and stay symlinks.
// Upstream kube-proxy v1.37 runs the same set (plus the names in
// kubeProxyAliases and ipset); it clears conntrack entries over netlink, so
// neither image has the conntrack tool.
func agentTools() []string {
	var out []string
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, variant := range []string{"legacy", "nft"} {
			for _, tool := range []string{"", "-save", "-restore"} {
				out = append(out, sbin+"/"+fam+"-"+variant+tool)
			}
		}
	}
	return append(out, sbin+"/nft", sbin+"/modprobe", "/etc/protocols", "/etc/services")
}

// kubeProxyAliases are the unsuffixed names upstream kube-proxy runs. Its
// image points them at iptables-wrapper, which picks legacy or nft on first
// use from the rules already on the node; here they point at the nft variant,
// what the wrapper picks on a node with no legacy rules (every harness node).
func kubeProxyAliases() []File {
	var out []File
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, tool := range []string{"", "-save", "-restore"} {
			out = append(out, File{Path: sbin + "/" + fam + tool, Mode: fs.ModeSymlink | 0o777, Link: "xtables-nft-multi"})
		}
	}
	return out
}

// baseFiles are the directories a tools image has besides packages' files:
// the usrmerge symlinks (so /sbin/modprobe and /lib/... resolve as on a
// Debian 12 node), /run for iptables' /run/xtables.lock, and /tmp.
func baseFiles(t *Tree) []File {
	out := []File{
		{Path: "/run", Mode: fs.ModeDir | 0o755},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	}
	for _, d := range usrMerged {
		out = append(out, t.files["/"+d])
	}
	return out
}

// toolSet is the Debian side of the switchyard and kube-proxy images.
type toolSet struct {
	agent, kubeProxy         *Layer
	agentPkgs, kubeProxyPkgs []Package
}

// toolLayers fetches and reads the packages once per Builder.
func (b *Builder) toolLayers(ctx context.Context) (*toolSet, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tools != nil {
		return b.tools, nil
	}
	cache, err := b.cacheDir()
	if err != nil {
		return nil, err
	}
	pkgs, err := resolvePackages(ctx, append(slices.Clone(agentPackages), kubeProxyPackages...))
	if err != nil {
		return nil, err
	}
	debs := filepath.Join(cache, "debs")
	b.logf("fetching %d Debian packages into %s", len(pkgs), debs)
	if err := fetchPackages(ctx, debs, pkgs); err != nil {
		return nil, err
	}
	tree, err := loadTree(ctx, pkgs)
	if err != nil {
		return nil, err
	}
	ts, err := newToolSet(tree, pkgs)
	if err != nil {
		return nil, err
	}
	b.tools = ts
	return ts, nil
}

// newToolSet computes the two tool layers: the agent's tools, which both
// images share, and what kube-proxy needs on top of them.
func newToolSet(t *Tree, pkgs []Package) (*toolSet, error) {
	agentRoots := append(agentTools(), t.glob(xtablesDir, ".so")...)
	agentFiles, err := t.closure(agentRoots)
	if err != nil {
		return nil, fmt.Errorf("the agent's tools: %w", err)
	}
	kubeFiles, err := t.closure([]string{sbin + "/ipset"})
	if err != nil {
		return nil, fmt.Errorf("kube-proxy's tools: %w", err)
	}
	kubeFiles = slices.DeleteFunc(kubeFiles, func(p string) bool { return slices.Contains(agentFiles, p) })
	ts := &toolSet{}
	agent := append(t.entries(agentFiles), baseFiles(t)...)
	if ts.agent, err = NewLayer("Debian tools: iptables (legacy, nft), nft, modprobe", agent); err != nil {
		return nil, err
	}
	kube := append(t.entries(kubeFiles), kubeProxyAliases()...)
	if ts.kubeProxy, err = NewLayer("Debian tools for kube-proxy: ipset, iptables -> nft", kube); err != nil {
		return nil, err
	}
	ts.agentPkgs, ts.kubeProxyPkgs = packagesOf(agent, pkgs), packagesOf(kube, pkgs)
	return ts, nil
}

// entries returns the tree's files at paths.
func (t *Tree) entries(paths []string) []File {
	out := make([]File, 0, len(paths))
	for _, p := range paths {
		out = append(out, t.files[p])
	}
	return out
}

// packagesOf lists the packages (from pkgs) that files came from.
func packagesOf(files []File, pkgs []Package) []Package {
	var out []Package
	for _, p := range pkgs {
		if slices.ContainsFunc(files, func(f File) bool { return f.Pkg == p.Name }) {
			out = append(out, p)
		}
	}
	return out
}
