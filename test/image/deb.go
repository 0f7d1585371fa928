package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"strings"
)

// loadTree reads every package's files into one usrmerged tree. The .deb's
// data archive comes from `dpkg-deb --fsys-tarfile` (whatever its compression)
// and is read in Go: nothing is extracted to disk, so no file of the build
// host's (owners, umask, mtimes) can leak into the image.
func loadTree(ctx context.Context, pkgs []Package) (*Tree, error) {
	t := newTree()
	for _, p := range pkgs {
		if err := loadDeb(ctx, t, p); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func loadDeb(ctx context.Context, t *Tree, p Package) error {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", p.Path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", p.Path, err, strings.TrimSpace(stderr.String()))
	}
	if err := addTar(t, p.Name, &stdout); err != nil {
		return fmt.Errorf("debian package %s: %w", p, err)
	}
	return nil
}

// addTar adds a package's data tar to the tree. Documentation is skipped:
// no tool reads it, and it is most of some packages.
func addTar(t *Tree, pkg string, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(h.Name, ".")
		if strings.HasPrefix(name, "/usr/share/doc/") || strings.HasPrefix(name, "/usr/share/man/") {
			continue
		}
		f, err := tarFile(pkg, name, h, tr)
		if err != nil {
			return err
		}
		if err := t.add(f); err != nil {
			return err
		}
	}
}

// tarFile turns one tar entry into a File. Hard links (which Debian packages
// rarely use) are not supported: the error names the file.
func tarFile(pkg, name string, h *tar.Header, r io.Reader) (File, error) {
	// FileInfo maps tar's setuid, setgid and sticky bits to fs.FileMode's.
	perm := h.FileInfo().Mode() &^ fs.ModeType
	f := File{Path: name, Mode: perm, Pkg: pkg}
	switch h.Typeflag {
	case tar.TypeDir:
		f.Mode |= fs.ModeDir
	case tar.TypeSymlink:
		f.Mode, f.Link = fs.ModeSymlink|0o777, h.Linkname
	case tar.TypeReg:
		data, err := io.ReadAll(r)
		if err != nil {
			return File{}, err
		}
		f.Data = data
	default:
		return File{}, fmt.Errorf("%s: tar entry type %q is not supported", name, h.Typeflag)
	}
	return f, nil
}
