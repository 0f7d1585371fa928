package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch is the time of every tar entry and of the image config: nothing of
// when or where a build ran goes into the image, so the same inputs give the
// same digest.
var Epoch = time.Unix(0, 0).UTC()

// Layer is a built layer with its sizes.
type Layer struct {
	v1.Layer
	Comment      string // what it holds, also its history entry
	Uncompressed int64  // bytes of the tar
}

// NewLayer builds a gzip-compressed OCI layer of files. Parent directories
// that files do not list are added (0755). Entries are sorted by path, owned
// by root and dated Epoch. The gzip stream is Go's compress/gzip, so the
// compressed digest is stable for a given Go release.
func NewLayer(comment string, files []File) (*Layer, error) {
	data, err := layerTar(files)
	if err != nil {
		return nil, fmt.Errorf("layer %q: %w", comment, err)
	}
	open := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	l, err := tarball.LayerFromOpener(open, tarball.WithMediaType(types.OCILayer),
		tarball.WithCompressionLevel(gzip.DefaultCompression), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("layer %q: %w", comment, err)
	}
	return &Layer{Layer: l, Comment: comment, Uncompressed: int64(len(data))}, nil
}

// layerTar writes the tar of files with their parent directories.
func layerTar(files []File) ([]byte, error) {
	all, err := withParents(files)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range all {
		if err := writeEntry(tw, f); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// withParents returns files plus their missing parent directories, sorted by
// path (a parent sorts before its children). A path listed twice must be the
// same entry both times.
func withParents(files []File) ([]File, error) {
	byPath := map[string]File{}
	for _, f := range files {
		f.Path = path.Clean("/" + f.Path)
		if old, ok := byPath[f.Path]; ok && !sameEntry(old, f) {
			return nil, fmt.Errorf("%s is listed twice, differently", f.Path)
		}
		byPath[f.Path] = f
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = File{Path: d, Mode: fs.ModeDir | 0o755}
			}
		}
	}
	delete(byPath, "/")
	out := make([]File, 0, len(byPath))
	for _, f := range byPath {
		if parent, ok := byPath[path.Dir(f.Path)]; ok && !parent.isDir() {
			return nil, fmt.Errorf("%s: its parent is not a directory in this layer", f.Path)
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

func sameEntry(a, b File) bool {
	return a.Mode == b.Mode && a.Link == b.Link && bytes.Equal(a.Data, b.Data)
}

// writeEntry writes one entry: root-owned, dated Epoch, no user or group names.
func writeEntry(tw *tar.Writer, f File) error {
	h := &tar.Header{
		Name:    strings.TrimPrefix(f.Path, "/"),
		Mode:    int64(f.Mode.Perm()) | modeBits(f.Mode),
		ModTime: Epoch,
		Format:  tar.FormatPAX,
	}
	switch {
	case f.isDir():
		h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
	case f.isSymlink():
		h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
	case f.Mode.IsRegular():
		h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
	default:
		return fmt.Errorf("unsupported file mode %v", f.Mode)
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := tw.Write(f.Data)
	return err
}

// modeBits is the setuid, setgid and sticky bits in tar's (Unix) encoding.
func modeBits(m fs.FileMode) int64 {
	var b int64
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}
