package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/switchyard/switchyard/test/controlplane"
)

// Options configure a Builder. The zero value builds from the module the
// working directory is in, with the default caches.
type Options struct {
	// Root is the Switchyard module's directory ("": found with `go env GOMOD`).
	Root string
	// Cache is ${SWITCHYARD_CACHE:-$HOME/.cache/switchyard} when empty; the
	// .debs go to Cache/debs.
	Cache string
	// Version is the switchyard binary's main.version ("": `git describe
	// --tags --always --dirty` in Root, as the Makefile; "dev" outside git).
	Version string
	// K8sBinDir holds kube-proxy ("": controlplane.BinDir()).
	K8sBinDir string
	// Log gets one line per step (nil: silent).
	Log io.Writer
}

// Builder builds the images. It fetches and reads the Debian packages once,
// so building switchyard and kube-proxy with one Builder reads them once and
// gives both the same tools layer. A Builder is safe for concurrent use.
type Builder struct {
	o Options

	mu    sync.Mutex
	tools *toolSet // nil until first needed
}

// NewBuilder returns a Builder; nothing runs until Build.
func NewBuilder(o Options) *Builder { return &Builder{o: o} }

// Result is a built image archive.
type Result struct {
	Name   string // switchyard, kube-proxy, test or pause
	Ref    string // e.g. localhost/switchyard:dev
	Path   string // the archive
	Digest v1.Hash
	// Compressed and Uncompressed are the layers' gzip bytes and tar bytes.
	Compressed, Uncompressed int64
	Layers                   []LayerInfo
	Packages                 []Package // Debian packages with files in the image
}

// LayerInfo is one layer of a Result, bottom first.
type LayerInfo struct {
	Comment                  string
	Digest                   v1.Hash
	Compressed, Uncompressed int64
}

// Names lists the images Build knows, in the order `all` builds them.
func Names() []string { return []string{"switchyard", "kube-proxy", "test", "pause"} }

// Ref is the reference an image is tagged with ("" for an unknown name).
func Ref(name string) string {
	return map[string]string{
		"switchyard": "localhost/switchyard:dev",
		"kube-proxy": "localhost/kube-proxy:" + controlplane.Version,
		"test":       "localhost/switchyard-test:dev",
		"pause":      "localhost/pause:dev",
	}[name]
}

// ArchiveName is the file Build writes in its directory: <name>-image.tar.
func ArchiveName(name string) string { return name + "-image.tar" }

// Build builds one image with the default Options into dir/<name>-image.tar.
// For example, a harness that needs the pause image:
//
//	res, err := image.Build(ctx, "pause", dir) // res.Path, res.Ref, res.Digest
func Build(ctx context.Context, name, dir string) (*Result, error) {
	return NewBuilder(Options{}).Build(ctx, name, dir)
}

// Build builds one image (see Names) into dir/<name>-image.tar.
func (b *Builder) Build(ctx context.Context, name, dir string) (*Result, error) {
	spec, pkgs, err := b.spec(ctx, name)
	if err != nil {
		return nil, err
	}
	img, err := Assemble(spec)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, ArchiveName(name))
	b.logf("writing %s", path)
	if err := WriteArchive(path, spec.Ref, img); err != nil {
		return nil, err
	}
	return result(name, path, spec, img, pkgs)
}

// spec runs the recipe of an image.
func (b *Builder) spec(ctx context.Context, name string) (Spec, []Package, error) {
	switch name {
	case "switchyard":
		return b.switchyardSpec(ctx)
	case "kube-proxy":
		return b.kubeProxySpec(ctx)
	case "test":
		return b.testSpec(ctx)
	case "pause":
		return b.pauseSpec(ctx)
	}
	return Spec{}, nil, fmt.Errorf("no image %q (want one of %s)", name, strings.Join(Names(), ", "))
}

func result(name, path string, spec Spec, img v1.Image, pkgs []Package) (*Result, error) {
	dig, err := img.Digest()
	if err != nil {
		return nil, err
	}
	r := &Result{Name: name, Ref: spec.Ref, Path: path, Digest: dig, Packages: pkgs}
	for _, l := range spec.Layers {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		size, err := l.Size()
		if err != nil {
			return nil, err
		}
		r.Layers = append(r.Layers, LayerInfo{Comment: l.Comment, Digest: d, Compressed: size, Uncompressed: l.Uncompressed})
		r.Compressed += size
		r.Uncompressed += l.Uncompressed
	}
	return r, nil
}

func (b *Builder) logf(format string, args ...any) {
	if b.o.Log != nil {
		fmt.Fprintf(b.o.Log, "image: "+format+"\n", args...)
	}
}

// cacheDir is Options.Cache or its default.
func (b *Builder) cacheDir() (string, error) {
	if b.o.Cache != "" {
		return b.o.Cache, nil
	}
	if c := os.Getenv("SWITCHYARD_CACHE"); c != "" {
		return c, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("image: no cache directory (set SWITCHYARD_CACHE): %w", err)
	}
	return filepath.Join(home, ".cache", "switchyard"), nil
}

// PackageList is the package=version list, sorted: the image label's value.
func PackageList(pkgs []Package) string {
	s := make([]string, 0, len(pkgs))
	for _, p := range pkgs {
		s = append(s, p.String())
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}
