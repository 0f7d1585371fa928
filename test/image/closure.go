package image

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// libDirs is where Debian's dynamic loader looks for a library when no
// /etc/ld.so.cache exists (the images have none): its built-in multiarch and
// system directories, in its order.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"}

// closure returns the paths (sorted) an image needs for every root to run:
// the roots, each symlink on the way to them, and for every ELF object among
// them its interpreter and the libraries its DT_NEEDED entries name, found as
// the loader would (DT_RUNPATH, then libDirs), recursively.
func (t *Tree) closure(roots []string) ([]string, error) {
	seen := map[string]bool{}
	var visit func(p, neededBy string) error
	visit = func(p, neededBy string) error {
		final, links, err := t.resolve(p)
		if err != nil {
			if neededBy != "" {
				return fmt.Errorf("%w (needed by %s)", err, neededBy)
			}
			return err
		}
		for _, l := range links {
			seen[l] = true
		}
		if seen[final] {
			return nil
		}
		seen[final] = true
		deps, err := t.elfDeps(final)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, final); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range roots {
		if err := visit(r, ""); err != nil {
			return nil, err
		}
	}
	return sortedKeys(seen), nil
}

// elfDeps lists what the object at p needs loaded with it: the interpreter and
// each DT_NEEDED library as a path in the tree. A file that is not ELF (a
// config file, a script) needs nothing.
func (t *Tree) elfDeps(p string) ([]string, error) {
	f := t.files[p]
	if f.isDir() || !bytes.HasPrefix(f.Data, []byte(elf.ELFMAG)) {
		return nil, nil
	}
	ef, err := elf.NewFile(bytes.NewReader(f.Data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	defer ef.Close()
	var deps []string
	for _, prog := range ef.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return nil, fmt.Errorf("%s: reading PT_INTERP: %w", p, err)
			}
			deps = append(deps, strings.TrimRight(string(b), "\x00"))
		}
	}
	needed, err := ef.DynString(elf.DT_NEEDED)
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return nil, fmt.Errorf("%s: DT_NEEDED: %w", p, err)
	}
	dirs, err := searchDirs(ef, path.Dir(p))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	for _, lib := range needed {
		found, err := t.findLib(lib, dirs)
		if err != nil {
			return nil, fmt.Errorf("%s needs %s: %w", p, lib, err)
		}
		deps = append(deps, found)
	}
	return deps, nil
}

// searchDirs is the object's DT_RUNPATH (or the older DT_RPATH), $ORIGIN
// expanded, followed by the default directories.
func searchDirs(ef *elf.File, origin string) ([]string, error) {
	var dirs []string
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, err := ef.DynString(tag)
		if err != nil {
			return nil, err
		}
		for _, v := range vals {
			for _, d := range strings.Split(v, ":") {
				d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", origin), "$ORIGIN", origin)
				dirs = append(dirs, d)
			}
		}
	}
	return append(dirs, libDirs...), nil
}

// findLib returns the first dir/lib that exists in the tree.
func (t *Tree) findLib(lib string, dirs []string) (string, error) {
	if strings.Contains(lib, "/") {
		return lib, nil
	}
	for _, d := range dirs {
		p := path.Join(d, lib)
		if _, _, err := t.resolve(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("in none of %v of the packages fetched: %w (add the package holding it)", dirs, fs.ErrNotExist)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
