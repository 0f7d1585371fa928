package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Annotations on the image's entry in index.json. containerd's importer
// (`ctr images import`) names the image after io.containerd.image.name; OCI
// tools (skopeo, podman) read org.opencontainers.image.ref.name. Both carry
// the full reference, as ctr without --base-name drops a bare tag.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// WriteArchive writes img as an OCI image archive: the tar of an OCI image
// layout (oci-layout, index.json, blobs/sha256/...) that also holds a Docker
// manifest.json naming the same blobs with RepoTags, so `docker load` takes
// it as well. ctr and containerd read the OCI layout when oci-layout is there.
// Entries are sorted and dated Epoch; the file is written whole or not at all.
func WriteArchive(path, ref string, img v1.Image) error {
	dir, err := os.MkdirTemp("", "switchyard-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := writeLayout(dir, ref, img); err != nil {
		return fmt.Errorf("image %s: OCI layout: %w", ref, err)
	}
	if err := writeDockerManifest(dir, ref, img); err != nil {
		return fmt.Errorf("image %s: manifest.json: %w", ref, err)
	}
	if err := tarDir(dir, path); err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	return nil
}

// writeLayout writes the layout with img as index.json's one entry. The entry
// is built here rather than by AppendImage, which would give it an
// artifactType (meant for artifacts, not images) that some readers refuse.
func writeLayout(dir, ref string, img v1.Image) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.WriteImage(img); err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	dig, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	return p.AppendDescriptor(v1.Descriptor{
		MediaType:   mt,
		Size:        size,
		Digest:      dig,
		Annotations: map[string]string{annotationContainerdName: ref, annotationRefName: ref},
		Platform:    &v1.Platform{Architecture: "amd64", OS: "linux"},
	})
}

// dockerManifest is one entry of a docker-archive's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func writeDockerManifest(dir, ref string, img v1.Image) error {
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	dm := dockerManifest{Config: blobPath(m.Config.Digest), RepoTags: []string{ref}}
	for _, l := range m.Layers {
		dm.Layers = append(dm.Layers, blobPath(l.Digest))
	}
	data, err := json.Marshal([]dockerManifest{dm})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "manifest.json"), data, 0o644)
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// tarDir writes the tree under dir as a tar at out (through a temporary file
// renamed into place): sorted, root-owned, dated Epoch, 0644 files, 0755 dirs.
func tarDir(dir, out string) error {
	paths, err := walkSorted(dir)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	for _, p := range paths {
		if err := tarEntry(tw, dir, p); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// CreateTemp makes the file 0600; an archive is for anyone to import.
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

// walkSorted lists dir's entries as slash-separated relative paths, sorted.
func walkSorted(dir string) ([]string, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		paths = append(paths, filepath.ToSlash(rel))
		return err
	})
	slices.Sort(paths)
	return paths, err
}

func tarEntry(tw *tar.Writer, dir, rel string) error {
	fi, err := os.Lstat(filepath.Join(dir, rel))
	if err != nil {
		return err
	}
	h := &tar.Header{Name: rel, Mode: 0o644, ModTime: Epoch, Typeflag: tar.TypeReg, Size: fi.Size(), Format: tar.FormatPAX}
	if fi.IsDir() {
		h.Name, h.Mode, h.Typeflag, h.Size = strings.TrimSuffix(rel, "/")+"/", 0o755, tar.TypeDir, 0
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", rel)
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if fi.IsDir() {
		return nil
	}
	f, err := os.Open(filepath.Join(dir, rel))
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}
