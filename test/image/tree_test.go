package image

import (
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"
)

// A tree like bookworm's: libc6 ships the loader under /lib and /lib64, kmod
// ships /sbin/modprobe -> /bin/kmod, iptables relative symlinks in /usr/sbin.
func bookwormTree(t *testing.T) *Tree {
	t.Helper()
	tr := newTree()
	for _, f := range []File{
		{Path: "/lib/x86_64-linux-gnu", Mode: fs.ModeDir | 0o755, Pkg: "libc6"},
		{Path: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", Mode: 0o755, Data: []byte("ld"), Pkg: "libc6"},
		{Path: "/lib64/ld-linux-x86-64.so.2", Mode: fs.ModeSymlink | 0o777, Link: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", Pkg: "libc6"},
		{Path: "/bin/kmod", Mode: 0o755, Data: []byte("kmod"), Pkg: "kmod"},
		{Path: "/sbin/modprobe", Mode: fs.ModeSymlink | 0o777, Link: "/bin/kmod", Pkg: "kmod"},
		{Path: "/usr/sbin/xtables-nft-multi", Mode: 0o755, Data: []byte("x"), Pkg: "iptables"},
		{Path: "/usr/sbin/iptables-nft", Mode: fs.ModeSymlink | 0o777, Link: "xtables-nft-multi", Pkg: "iptables"},
		{Path: "/usr/sbin/loop", Mode: fs.ModeSymlink | 0o777, Link: "loop", Pkg: "iptables"},
	} {
		if err := tr.add(f); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func TestResolveFollowsUsrmergeAndSymlinks(t *testing.T) {
	tr := bookwormTree(t)
	for _, tc := range []struct {
		path, final string
		links       []string
	}{
		{"/lib64/ld-linux-x86-64.so.2", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
			[]string{"/lib64", "/usr/lib64/ld-linux-x86-64.so.2", "/lib"}},
		{"/sbin/modprobe", "/usr/bin/kmod", []string{"/sbin", "/usr/sbin/modprobe", "/bin"}},
		{"/usr/sbin/iptables-nft", "/usr/sbin/xtables-nft-multi", []string{"/usr/sbin/iptables-nft"}},
		{"/usr/lib/x86_64-linux-gnu/../../sbin/iptables-nft", "/usr/sbin/xtables-nft-multi", []string{"/usr/sbin/iptables-nft"}},
	} {
		final, links, err := tr.resolve(tc.path)
		if err != nil || final != tc.final || !slices.Equal(links, tc.links) {
			t.Errorf("resolve(%s) = %s, %v, %v; want %s, %v", tc.path, final, links, err, tc.final, tc.links)
		}
	}
	if _, _, err := tr.resolve("/usr/sbin/nft"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("resolve(missing) error = %v, want ErrNotExist", err)
	}
	if _, _, err := tr.resolve("/usr/sbin/loop"); err == nil {
		t.Error("resolve(a symlink loop) succeeded")
	}
}

func TestTreeRefusesConflictingFiles(t *testing.T) {
	tr := bookwormTree(t)
	same := File{Path: "/bin/kmod", Mode: 0o755, Data: []byte("kmod"), Pkg: "other"}
	if err := tr.add(same); err != nil {
		t.Errorf("the same file from two packages: %v", err)
	}
	other := File{Path: "/usr/bin/kmod", Mode: 0o755, Data: []byte("not kmod"), Pkg: "other"}
	if err := tr.add(other); err == nil {
		t.Error("a different file at /usr/bin/kmod (kmod ships /bin/kmod) was accepted")
	}
}

// Files that are not ELF need nothing; the closure keeps every symlink crossed.
func TestClosureOfNonELF(t *testing.T) {
	got, err := bookwormTree(t).closure([]string{"/sbin/modprobe"})
	want := []string{"/bin", "/sbin", "/usr/bin/kmod", "/usr/sbin/modprobe"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("closure = %v, %v; want %v", got, err, want)
	}
}

func TestParseAptShow(t *testing.T) {
	out := []byte(`Package: iptables
Version: 1.8.9-2
Architecture: amd64
Depends: libip4tc2 (= 1.8.9-2), netbase (>= 6.0), libc6 (>= 2.34), libfoo | libbar, libx:any
Description: administration tools
 a long description
 .
 more
SHA256: abc

Package: libgmp10
Version: 2:6.2.1+dfsg1-1.1
Architecture: amd64
Pre-Depends: libc6
SHA256: def
`)
	pkgs, err := parseAptShow(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 2 {
		t.Fatalf("got %d packages: %+v", len(pkgs), pkgs)
	}
	if want := []string{"libip4tc2", "netbase", "libc6", "libfoo", "libx"}; !slices.Equal(pkgs[0].Depends, want) {
		t.Errorf("iptables depends on %v, want %v", pkgs[0].Depends, want)
	}
	if p := pkgs[1]; p.String() != "libgmp10=2:6.2.1+dfsg1-1.1" || p.fileName() != "libgmp10_2%3a6.2.1+dfsg1-1.1_amd64.deb" {
		t.Errorf("libgmp10: %s, file %s", p, p.fileName())
	}
}

func TestLayerRefusesAFileUnderASymlink(t *testing.T) {
	_, err := NewLayer("bad", []File{
		{Path: "/lib", Mode: fs.ModeSymlink | 0o777, Link: "usr/lib"},
		{Path: "/lib/libc.so.6", Mode: 0o644, Data: []byte("c")},
	})
	if err == nil {
		t.Error("a file under a symlink was accepted")
	}
}

// A package apt does not know is an error that names it.
func TestUnknownPackageIsNamed(t *testing.T) {
	requireTools(t, "apt-cache")
	_, err := resolvePackages(t.Context(), []string{"netbase", "switchyard-no-such-package"})
	if err == nil || !strings.Contains(err.Error(), `"switchyard-no-such-package"`) {
		t.Errorf("error = %v, want one naming the package", err)
	}
}

// Without the kube-proxy binary the error says how to get it, before any
// package is fetched.
func TestKubeProxyWithoutBinarySaysWhatToDo(t *testing.T) {
	b := NewBuilder(Options{K8sBinDir: t.TempDir(), Cache: t.TempDir()})
	_, err := b.Build(t.Context(), "kube-proxy", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "make controlplane") {
		t.Errorf("error = %v, want one pointing at make controlplane", err)
	}
}
