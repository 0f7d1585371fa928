package image

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// File is one entry of a layer: a directory, a regular file or a symlink.
type File struct {
	Path string      // absolute and clean, e.g. "/usr/sbin/nft"
	Mode fs.FileMode // permission bits, plus fs.ModeDir or fs.ModeSymlink
	Link string      // a symlink's target, as written (relative or absolute)
	Data []byte      // a regular file's contents
	Pkg  string      // the Debian package it came from ("" for the builder's own)
}

func (f File) isDir() bool     { return f.Mode&fs.ModeDir != 0 }
func (f File) isSymlink() bool { return f.Mode&fs.ModeSymlink != 0 }

// usrMerged are the top-level directories Debian 12 makes symlinks into /usr
// (the usrmerge layout of a bookworm base image). Packages still ship some
// files under them (libc6's /lib/x86_64-linux-gnu, kmod's /sbin/modprobe): the
// tree files those under /usr so that both spellings resolve, as on a node.
var usrMerged = []string{"bin", "lib", "lib64", "sbin"}

// Tree is the union of the extracted Debian packages' files, usrmerged.
type Tree struct {
	files map[string]File
}

// newTree starts a tree with the usrmerge symlinks (/bin -> usr/bin, ...).
func newTree() *Tree {
	t := &Tree{files: map[string]File{"/": {Path: "/", Mode: fs.ModeDir | 0o755}}}
	for _, d := range usrMerged {
		t.files["/"+d] = File{Path: "/" + d, Mode: fs.ModeSymlink | 0o777, Link: "usr/" + d}
	}
	return t
}

// usrMerge maps a path as a package ships it to where it lives on a usrmerged
// system: /sbin/modprobe -> /usr/sbin/modprobe.
func usrMerge(p string) string {
	for _, d := range usrMerged {
		if p == "/"+d || strings.HasPrefix(p, "/"+d+"/") {
			return "/usr" + p
		}
	}
	return p
}

// add files one package's entry (and its parent directories, should the
// archive not list them). Directories merge; the same path from two packages
// must be the same file, as dpkg would refuse the overlap otherwise.
func (t *Tree) add(f File) error {
	f.Path = usrMerge(path.Clean("/" + f.Path))
	for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
		if _, ok := t.files[d]; !ok {
			t.files[d] = File{Path: d, Mode: fs.ModeDir | 0o755, Pkg: f.Pkg}
		}
	}
	old, ok := t.files[f.Path]
	if !ok {
		t.files[f.Path] = f
		return nil
	}
	if old.isDir() && f.isDir() {
		return nil
	}
	if old.Mode == f.Mode && old.Link == f.Link && bytes.Equal(old.Data, f.Data) {
		return nil
	}
	return fmt.Errorf("%s: shipped differently by %s and %s", f.Path, old.Pkg, f.Pkg)
}

// maxLinks bounds symlink chains, as the kernel's ELOOP does.
const maxLinks = 40

// resolve follows p through the tree's symlinks. It returns the path of what
// p finally names and every symlink crossed on the way (each at its own
// location), all of which an image must hold for p to work there.
func (t *Tree) resolve(p string) (string, []string, error) {
	var links []string
	// Not path.Clean: "dir/.." must go through dir, which may be a symlink.
	rest := strings.Split(p, "/")
	cur := "/"
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, name)
		f, ok := t.files[next]
		if !ok {
			return "", nil, fmt.Errorf("%s: %w (at %s)", p, fs.ErrNotExist, next)
		}
		if !f.isSymlink() {
			cur = next
			continue
		}
		if links = append(links, next); len(links) > maxLinks {
			return "", nil, fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		if path.IsAbs(f.Link) {
			cur = "/"
		}
		rest = append(strings.Split(f.Link, "/"), rest...)
	}
	return cur, links, nil
}

// glob lists the regular files and symlinks directly in dir whose names end
// in suffix, sorted.
func (t *Tree) glob(dir, suffix string) []string {
	var out []string
	for p, f := range t.files {
		if path.Dir(p) == dir && strings.HasSuffix(p, suffix) && !f.isDir() {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}
