package vm

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// hostFS copies host files into the archive at their host paths, with what makes them run there:
// the ELF interpreter and shared libraries they need (recursively), a script's interpreter, and
// the host's top-level symlinks (/lib -> usr/lib on merged-/usr systems), so every path a binary or
// library names resolves in the guest as on the host.
type hostFS struct {
	a        *archive
	topLinks map[string]string // /lib -> /usr/lib
	done     map[string]bool
	warn     func(format string, args ...any)
}

var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
	"/lib", "/usr/lib", "/usr/local/lib"}

func newHostFS(a *archive, warn func(string, ...any)) *hostFS {
	h := &hostFS{a: a, topLinks: map[string]string{}, done: map[string]bool{}, warn: warn}
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} {
		target, err := os.Readlink(d)
		if err != nil {
			continue
		}
		a.addSymlink(d, target)
		if !filepath.IsAbs(target) {
			target = filepath.Join("/", target)
		}
		h.topLinks[d] = target
	}
	return h
}

// canon maps a host path to where it lives in the archive, which holds nothing under a symlink.
func (h *hostFS) canon(p string) string {
	p = filepath.Clean(p)
	for link, target := range h.topLinks {
		if rest, ok := strings.CutPrefix(p, link+"/"); ok {
			return filepath.Join(target, rest)
		}
	}
	return p
}

// add copies the host file p (following symlinks; p itself becomes a symlink to the real file
// when it is one) and everything it needs to run.
func (h *hostFS) add(p string) error {
	p = filepath.Clean(p)
	if h.done[p] {
		return nil
	}
	h.done[p] = true
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return err
	}
	st, err := os.Stat(real)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return h.addTree(real)
	}
	if g := h.canon(p); g != real {
		h.a.addSymlink(g, real)
	}
	if h.done[real] && real != p {
		return nil
	}
	h.done[real] = true
	h.a.addFile(real, real, uint32(st.Mode().Perm()))
	return h.addNeeds(real)
}

// addTree copies every file and symlink under dir.
func (h *hostFS) addTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return h.add(p)
	})
}

// addNeeds adds the ELF interpreter and libraries of an executable or library, or the
// interpreter of a script.
func (h *hostFS) addNeeds(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		if interp := shebang(p); interp != "" {
			return h.add(interp)
		}
		return nil // data, not a program
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return fmt.Errorf("%s: interpreter: %w", p, err)
			}
			if err := h.add(strings.TrimRight(string(b), "\x00")); err != nil {
				return fmt.Errorf("%s: interpreter: %w", p, err)
			}
		}
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return nil // static
	}
	var search []string
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		paths, _ := f.DynString(tag)
		for _, rp := range paths {
			for _, d := range filepath.SplitList(rp) {
				search = append(search, strings.ReplaceAll(d, "$ORIGIN", filepath.Dir(p)))
			}
		}
	}
	search = append(search, libDirs...)
	for _, lib := range needed {
		found := false
		for _, d := range search {
			cand := filepath.Join(d, lib)
			if _, err := os.Stat(cand); err == nil {
				if err := h.add(cand); err != nil {
					return err
				}
				found = true
				break
			}
		}
		if !found {
			h.warn("%s needs %s, which is not on this machine", p, lib)
		}
	}
	return nil
}

// shebang returns the interpreter a script names, if any.
func shebang(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	rest, ok := strings.CutPrefix(line, "#!")
	if !ok {
		return ""
	}
	if fields := strings.Fields(rest); len(fields) > 0 && filepath.IsAbs(fields[0]) {
		return fields[0]
	}
	return ""
}
