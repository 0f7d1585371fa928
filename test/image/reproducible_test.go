package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// fixedFiles are a small image's inputs: a file, an executable, a symlink and
// a sticky directory, in no particular order.
func fixedFiles() []File {
	return []File{
		{Path: "/usr/bin/hello", Mode: 0o755, Data: []byte("#!hello\n")},
		{Path: "/etc/hello.conf", Mode: 0o644, Data: []byte("greeting = hello\n")},
		{Path: "/bin", Mode: fs.ModeSymlink | 0o777, Link: "usr/bin"},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	}
}

func buildFixed(t *testing.T, files []File, dir string) (string, string) {
	t.Helper()
	l, err := NewLayer("fixed", files)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Assemble(Spec{Ref: "localhost/fixed:test", Layers: []*Layer{l}, Entrypoint: []string{"/usr/bin/hello"}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "fixed-image.tar")
	if err := WriteArchive(path, "localhost/fixed:test", img); err != nil {
		t.Fatal(err)
	}
	dig, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dig.String(), path
}

// The same inputs, given in another order at another time, make the same
// archive byte for byte, and nothing in it carries a time or an owner.
func TestArchiveIsReproducible(t *testing.T) {
	files := fixedFiles()
	dig1, path1 := buildFixed(t, files, t.TempDir())
	slices.Reverse(files)
	dig2, path2 := buildFixed(t, files, t.TempDir())
	if dig1 != dig2 {
		t.Fatalf("digests differ: %s and %s", dig1, dig2)
	}
	a, b := mustRead(t, path1), mustRead(t, path2)
	if !bytes.Equal(a, b) {
		t.Fatalf("the archives differ (same digest %s)", dig1)
	}
	checkHeaders(t, "archive", bytes.NewReader(a), func(name string, r io.Reader) {
		if zr, err := gzip.NewReader(r); err == nil && filepath.Dir(name) == "blobs/sha256" {
			checkHeaders(t, name, zr, nil)
		}
	})
}

// checkHeaders requires sorted entries dated Epoch and owned by root, and
// calls inner (when set) with each regular file's contents.
func checkHeaders(t *testing.T, what string, r io.Reader, inner func(name string, r io.Reader)) {
	t.Helper()
	tr := tar.NewReader(r)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(Epoch) || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: %s: mtime %v, owner %d:%d (%q:%q): want Epoch, 0:0", what, h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if inner != nil && h.Typeflag == tar.TypeReg {
			inner(h.Name, tr)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("%s: entries not sorted: %v", what, names)
	}
}

// The pause image built twice (two Builders, two go builds) is the same image,
// and its archive says what ctr and docker need: the ref in index.json's
// annotations and manifest.json's RepoTags.
func TestPauseImageIsReproducible(t *testing.T) {
	requireTools(t, "go")
	ctx := context.Background()
	r1, err := NewBuilder(Options{}).Build(ctx, "pause", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r2, err := NewBuilder(Options{}).Build(ctx, "pause", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s, %d bytes compressed, %d uncompressed", r1.Ref, r1.Digest, r1.Compressed, r1.Uncompressed)
	if r1.Digest != r2.Digest || !bytes.Equal(mustRead(t, r1.Path), mustRead(t, r2.Path)) {
		t.Fatalf("two builds differ: %s (%s) and %s (%s)", r1.Digest, r1.Path, r2.Digest, r2.Path)
	}
	desc, img := readArchive(t, r1.Path)
	if desc.Digest != r1.Digest || desc.Annotations[annotationRefName] != "localhost/pause:dev" ||
		desc.Annotations[annotationContainerdName] != "localhost/pause:dev" {
		t.Errorf("index.json entry: %+v, want %s named localhost/pause:dev", desc, r1.Digest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/pause"}) || !cf.Created.Time.Equal(Epoch) {
		t.Errorf("config: entrypoint %v, created %v", cf.Config.Entrypoint, cf.Created)
	}
	checkDockerManifest(t, r1.Path, "localhost/pause:dev")
}

func checkDockerManifest(t *testing.T, archive, ref string) {
	t.Helper()
	data := archiveMember(t, archive, "manifest.json")
	var ms []dockerManifest
	if err := json.Unmarshal(data, &ms); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(ms) != 1 || !slices.Equal(ms[0].RepoTags, []string{ref}) || len(ms[0].Layers) == 0 {
		t.Errorf("manifest.json: %s, want one image tagged %s", data, ref)
	}
}

func archiveMember(t *testing.T, archive, name string) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(mustRead(t, archive)))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no %s: %v", archive, name, err)
		}
		if h.Name == name {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
