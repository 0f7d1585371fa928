package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Fetcher downloads Debian kernel packages into the cache without installing them: apt-get
// download through a private apt configuration (its own sources list, lists, cache and status,
// under <cache>/apt), so the machine's apt configuration and state are untouched; then dpkg-deb -x,
// depmod -b, and the ELF vmlinux is extracted. Only Fetch touches the network, and only the
// machine's Debian mirrors.
type Fetcher struct {
	CacheDir string
	Log      io.Writer
	updated  bool
}

// Fetch returns the cached kernel, downloading it first when it is not cached (or refresh is
// set: then the newest package is fetched again when it is newer than the cached one).
func (f *Fetcher) Fetch(ctx context.Context, name string, refresh bool) (*Kernel, error) {
	s, err := findSpec(name)
	if err != nil {
		return nil, err
	}
	if k, err := Cached(f.CacheDir, name); err == nil && !refresh {
		return k, nil
	}
	pkg, err := f.newestPackage(ctx, s)
	if err != nil {
		return nil, err
	}
	if k, err := Cached(f.CacheDir, name); err == nil && k.Package == pkg {
		fmt.Fprintf(f.Log, "vmrun: kernel %s is up to date (%s)\n", name, pkg)
		return k, nil
	}
	tmp, err := os.MkdirTemp(f.CacheDir, "."+name+".tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(f.Log, "vmrun: fetching kernel %s: %s\n", name, pkg)
	if _, err := f.apt(ctx, tmp, "apt-get", "download", pkg); err != nil {
		return nil, err
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	k, err := unpackKernel(ctx, debs[0], filepath.Join(tmp, "k"), name, pkg)
	if err != nil {
		return nil, err
	}
	final := filepath.Join(f.CacheDir, name)
	if err := os.RemoveAll(final); err != nil {
		return nil, err
	}
	if err := os.Rename(k.Dir, final); err != nil {
		return nil, err
	}
	k.Dir = final
	fmt.Fprintf(f.Log, "vmrun: kernel %s (%s) in %s\n", name, k.Release, final)
	return k, nil
}

// unpackKernel extracts the package into dir, writes modules.dep and the ELF vmlinux, and records
// what it is in kernel.json.
func unpackKernel(ctx context.Context, deb, dir, name, pkg string) (*Kernel, error) {
	if _, err := run(ctx, "", "dpkg-deb", "-x", deb, dir); err != nil {
		return nil, err
	}
	version, err := run(ctx, "", "dpkg-deb", "-f", deb, "Version")
	if err != nil {
		return nil, err
	}
	images, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("%s: %d kernel images in boot/", pkg, len(images))
	}
	k := &Kernel{Name: name, Package: pkg, Version: strings.TrimSpace(version), Dir: dir,
		Release: strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")}
	if _, err := run(ctx, "", "depmod", "-b", dir, k.Release); err != nil {
		return nil, err
	}
	if err := extractVmlinux(ctx, k.Vmlinuz(), filepath.Join(dir, "vmlinux")); err != nil {
		return nil, fmt.Errorf("%s: extract vmlinux: %w", pkg, err)
	}
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return nil, err
	}
	return k, os.WriteFile(filepath.Join(dir, "kernel.json"), append(b, '\n'), 0o644)
}

// newestPackage updates the private package lists (once per Fetcher) and picks the package of s
// with the highest number in its name.
func (f *Fetcher) newestPackage(ctx context.Context, s spec) (string, error) {
	if !f.updated {
		if err := os.MkdirAll(f.CacheDir, 0o755); err != nil {
			return "", err
		}
		if err := f.writeAptConfig(); err != nil {
			return "", err
		}
		fmt.Fprintln(f.Log, "vmrun: updating the private package lists (Debian mirrors only)")
		if _, err := f.apt(ctx, "", "apt-get", "update", "-qq"); err != nil {
			return "", err
		}
		f.updated = true
	}
	prefix := strings.SplitN(strings.TrimPrefix(s.pattern, "^"), `\`, 2)[0]
	out, err := f.apt(ctx, "", "apt-cache", "pkgnames", prefix)
	if err != nil {
		return "", err
	}
	re := regexp.MustCompile(s.pattern)
	best, bestN := "", -1
	for _, name := range strings.Fields(out) {
		m := re.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		if n, err := strconv.Atoi(m[1]); err == nil && n > bestN {
			best, bestN = name, n
		}
	}
	if best == "" {
		return "", fmt.Errorf("no package matching %s in the %s lists", s.pattern, s.suite)
	}
	return best, nil
}

func (f *Fetcher) aptDir() string { return filepath.Join(f.CacheDir, "apt") }

func (f *Fetcher) writeAptConfig() error {
	m, err := systemMirrors()
	if err != nil {
		return err
	}
	d := f.aptDir()
	for _, sub := range []string{"lists/partial", "archives/partial", "sources.list.d", "preferences.d"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(d, "status"), nil, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d, "apt.conf"), []byte(aptConf(d)), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d, "sources.list"), []byte(m.sourcesList()), 0o644)
}

// apt runs an apt tool with the private configuration (APT_CONFIG), in dir.
func (f *Fetcher) apt(ctx context.Context, dir, tool string, args ...string) (string, error) {
	path, err := lookTool(tool)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "APT_CONFIG="+filepath.Join(f.aptDir(), "apt.conf"))
	return output(cmd)
}

// aptConf points every directory apt reads or writes into d, and skips what a kernel download
// does not need (translations, AppStream metadata).
func aptConf(d string) string {
	var b strings.Builder
	for _, kv := range [][2]string{
		{"Dir::State", d}, {"Dir::State::Lists", filepath.Join(d, "lists")},
		{"Dir::State::status", filepath.Join(d, "status")},
		{"Dir::Cache", d}, {"Dir::Cache::Archives", filepath.Join(d, "archives")},
		{"Dir::Etc::SourceList", filepath.Join(d, "sources.list")},
		{"Dir::Etc::SourceParts", filepath.Join(d, "sources.list.d")},
		{"Dir::Etc::Preferences", filepath.Join(d, "preferences")},
		{"Dir::Etc::PreferencesParts", filepath.Join(d, "preferences.d")},
		{"APT::Architecture", "amd64"}, {"APT::Architectures", "amd64"},
		{"Acquire::Languages", "none"},
		{"Acquire::IndexTargets::deb::DEP-11::DefaultEnabled", "false"},
		{"Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled", "false"},
		{"Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled", "false"},
	} {
		fmt.Fprintf(&b, "%s \"%s\";\n", kv[0], kv[1])
	}
	if os.Geteuid() == 0 {
		b.WriteString("APT::Sandbox::User \"root\";\n") // the private directories are root's
	}
	return b.String()
}

// run runs a tool (looked up in PATH and the sbin directories) and returns its stdout; the error
// carries its stderr.
func run(ctx context.Context, dir, tool string, args ...string) (string, error) {
	path, err := lookTool(tool)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	return output(cmd)
}

func output(cmd *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// lookTool finds a host tool in PATH or the sbin directories (which a non-login root shell may lack).
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (run test/vm/prereqs.sh to install the runner's packages)", name)
}
