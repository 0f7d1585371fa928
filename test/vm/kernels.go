package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// spec is a kernel the runner knows how to fetch: the newest Debian package whose name matches
// pattern (its first group, a number, picks the newest ABI or patch level) in suite.
type spec struct {
	name    string
	suite   string // bullseye, bookworm: the sources the private apt configuration lists
	pattern string
}

// The kernels operators run: Debian's cloud flavour (fewer built-in drivers than the generic one
// and every module the dataplane needs: IPVS, netfilter, clsact, veth, dummy, bridge).
var specs = []spec{
	{"5.10", "bullseye", `^linux-image-5\.10\.0-([0-9]+)-cloud-amd64$`},
	{"6.1", "bookworm", `^linux-image-6\.1\.0-([0-9]+)-cloud-amd64$`},
	{"6.12", "bookworm", `^linux-image-6\.12\.([0-9]+)\+deb12-cloud-amd64$`},
}

// KernelNames lists the kernels Fetch knows, oldest first.
func KernelNames() []string {
	var out []string
	for _, s := range specs {
		out = append(out, s.name)
	}
	return out
}

func findSpec(name string) (spec, error) {
	for _, s := range specs {
		if s.name == name {
			return s, nil
		}
	}
	return spec{}, fmt.Errorf("unknown kernel %q (known: %s)", name, strings.Join(KernelNames(), ", "))
}

// Kernel is a kernel extracted into the cache.
type Kernel struct {
	Name    string `json:"name"`    // 6.1
	Package string `json:"package"` // linux-image-6.1.0-57-cloud-amd64
	Version string `json:"version"` // the package version
	Release string `json:"release"` // uname -r: 6.1.0-57-cloud-amd64
	Dir     string `json:"-"`       // the extracted package
}

// Vmlinuz is the compressed kernel image as packaged.
func (k *Kernel) Vmlinuz() string { return filepath.Join(k.Dir, "boot", "vmlinuz-"+k.Release) }

// Vmlinux is the uncompressed ELF kernel (booted through its PVH entry, ~3 s faster under TCG
// than decompressing the bzImage), or "" when it could not be extracted.
func (k *Kernel) Vmlinux() string {
	p := filepath.Join(k.Dir, "vmlinux")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// ModulesDir is lib/modules/<release> of the extracted package.
func (k *Kernel) ModulesDir() string {
	for _, d := range []string{"lib/modules", "usr/lib/modules"} {
		p := filepath.Join(k.Dir, d, k.Release)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join(k.Dir, "lib/modules", k.Release)
}

// DefaultCacheDir is ~/.cache/switchyard/kernels (or under $XDG_CACHE_HOME), unless
// $SWITCHYARD_KERNEL_CACHE names another.
func DefaultCacheDir() string {
	if d := os.Getenv("SWITCHYARD_KERNEL_CACHE"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = filepath.Join(os.TempDir(), "cache")
	}
	return filepath.Join(base, "switchyard", "kernels")
}

// ErrNotCached is returned by Cached for a kernel that was never fetched.
var ErrNotCached = errors.New("kernel not cached")

// Cached returns a fetched kernel. It never touches the network.
func Cached(cacheDir, name string) (*Kernel, error) {
	if _, err := findSpec(name); err != nil {
		return nil, err
	}
	dir := filepath.Join(cacheDir, name)
	b, err := os.ReadFile(filepath.Join(dir, "kernel.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (fetch it with `make vm-kernels` or `vmrun -fetch %s`)", ErrNotCached, name, name)
	}
	if err != nil {
		return nil, err
	}
	k := &Kernel{Dir: dir}
	if err := json.Unmarshal(b, k); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "kernel.json"), err)
	}
	return k, nil
}
