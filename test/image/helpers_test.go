package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// requirePrereq skips the test when err says something it needs is missing,
// or fails it under CI=true, where a missing prerequisite is a broken machine.
func requirePrereq(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing: %v", err)
	}
	t.Skipf("prerequisite missing: %v", err)
}

// requireRoot and requireTools are the usual prerequisites.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		requirePrereq(t, errors.New("this test runs as root"))
	}
}

func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			requirePrereq(t, fmt.Errorf("no %s: %w", n, err))
		}
	}
}

// shared is one Builder and output directory for the tests that need the real
// images, so the Debian packages are read and each image built once.
var shared struct {
	once    sync.Once
	dir     string
	err     error
	builder *Builder
	mu      sync.Mutex
	built   map[string]*Result
}

// builtImage builds (once per test binary) the named image with the default
// options.
func builtImage(t *testing.T, name string) *Result {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "switchyard-image-test-")
		shared.builder = NewBuilder(Options{Log: testLog{}})
		shared.built = map[string]*Result{}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if r, ok := shared.built[name]; ok {
		return r
	}
	r, err := shared.builder.Build(context.Background(), name, shared.dir)
	if err != nil {
		t.Fatalf("building %s: %v", name, err)
	}
	shared.built[name] = r
	return r
}

// testLog sends the builder's progress to the test's stderr, seen with -v.
type testLog struct{}

func (testLog) Write(p []byte) (int, error) { return os.Stderr.Write(p) }

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// readArchive opens an archive with go-containerregistry's OCI layout reader
// (not this package's writer) and returns index.json's one entry and its image.
func readArchive(t *testing.T, path string) (v1.Descriptor, v1.Image) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := untar(tar.NewReader(f), dir); err != nil {
		t.Fatalf("unpacking %s: %v", path, err)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json lists %d manifests, want 1", len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return im.Manifests[0], img
}

// extractRootfs writes the image's flattened filesystem under dir.
func extractRootfs(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	if err := untar(tar.NewReader(rc), dir); err != nil {
		t.Fatalf("extracting the rootfs: %v", err)
	}
}

// untar writes directories, regular files and symlinks under dir, refusing
// names that leave it.
func untar(tr *tar.Reader, dir string) error {
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			return fmt.Errorf("%s: outside the target", h.Name)
		}
		if err := untarEntry(h, tr, p); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
}

func untarEntry(h *tar.Header, r io.Reader, p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		return os.Chmod(p, h.FileInfo().Mode())
	case tar.TypeSymlink:
		return os.Symlink(h.Linkname, p)
	case tar.TypeReg:
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, h.FileInfo().Mode().Perm())
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		return errors.Join(err, f.Close())
	}
	return fmt.Errorf("unexpected entry type %q", h.Typeflag)
}
