package vm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// archive is the initramfs being assembled: guest paths (absolute, canonical) to entries. Parents
// are created implicitly; Write emits them first, as the kernel's unpacker needs.
type archive struct {
	entries map[string]entry
}

type entryKind int

const (
	kindDir entryKind = iota
	kindFile
	kindSymlink
	kindCharDev
)

type entry struct {
	kind   entryKind
	mode   uint32 // permission bits
	src    string // host file to copy (kindFile), unless data is set
	data   []byte
	target string // kindSymlink
	major  uint32 // kindCharDev
	minor  uint32
}

func newArchive() *archive { return &archive{entries: map[string]entry{}} }

func (a *archive) put(p string, e entry) {
	p = path.Clean("/" + p)
	for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
		if _, ok := a.entries[dir]; !ok {
			a.entries[dir] = entry{kind: kindDir, mode: 0o755}
		}
	}
	a.entries[p] = e
}

func (a *archive) has(p string) bool {
	_, ok := a.entries[path.Clean("/"+p)]
	return ok
}

// addFile copies a host file into the archive at guest path p.
func (a *archive) addFile(p, src string, mode uint32) {
	a.put(p, entry{kind: kindFile, src: src, mode: mode})
}

// addData stores bytes at guest path p.
func (a *archive) addData(p string, data []byte, mode uint32) {
	a.put(p, entry{kind: kindFile, data: data, mode: mode})
}

func (a *archive) addSymlink(p, target string) { a.put(p, entry{kind: kindSymlink, target: target}) }

func (a *archive) addDir(p string) { a.put(p, entry{kind: kindDir, mode: 0o755}) }

func (a *archive) addCharDev(p string, major, minor uint32) {
	a.put(p, entry{kind: kindCharDev, mode: 0o600, major: major, minor: minor})
}

// writeTo writes the archive as an uncompressed newc cpio (the fastest for the guest to unpack
// under emulation) and returns its size.
func (a *archive) writeTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: bufio.NewWriterSize(w, 1<<20)}
	names := make([]string, 0, len(a.entries))
	for p := range a.entries {
		names = append(names, p)
	}
	sort.Strings(names) // a parent is a prefix of its children, so it sorts before them
	for i, p := range names {
		if err := writeEntry(cw, uint32(i+1), strings.TrimPrefix(p, "/"), a.entries[p]); err != nil {
			return cw.n, fmt.Errorf("initramfs %s: %w", p, err)
		}
	}
	if err := writeHeader(cw, "TRAILER!!!", 0, 0, 0, 0, 0); err != nil {
		return cw.n, err
	}
	return cw.n, cw.w.(*bufio.Writer).Flush()
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

func writeEntry(w *countWriter, ino uint32, name string, e entry) error {
	switch e.kind {
	case kindDir:
		return writeHeader(w, name, ino, sIFDIR|e.mode, 0, 0, 0)
	case kindSymlink:
		if err := writeHeader(w, name, ino, sIFLNK|0o777, uint32(len(e.target)), 0, 0); err != nil {
			return err
		}
		return writePadded(w, []byte(e.target))
	case kindCharDev:
		return writeHeader(w, name, ino, sIFCHR|e.mode, 0, e.major, e.minor)
	}
	if e.data != nil || e.src == "" {
		if err := writeHeader(w, name, ino, sIFREG|e.mode, uint32(len(e.data)), 0, 0); err != nil {
			return err
		}
		return writePadded(w, e.data)
	}
	f, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() >= 1<<32 {
		return fmt.Errorf("%s: too large for cpio", e.src)
	}
	if err := writeHeader(w, name, ino, sIFREG|e.mode, uint32(st.Size()), 0, 0); err != nil {
		return err
	}
	if n, err := io.Copy(w, f); err != nil || n != st.Size() {
		return fmt.Errorf("copy %s: %d of %d bytes: %v", e.src, n, st.Size(), err)
	}
	return pad(w)
}

func writeHeader(w *countWriter, name string, ino, mode, size, rmajor, rminor uint32) error {
	nlink := uint32(1)
	if mode&sIFDIR == sIFDIR {
		nlink = 2
	}
	_, err := fmt.Fprintf(w, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%s\x00",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, len(name)+1, 0, name)
	if err != nil {
		return err
	}
	return pad(w)
}

func writePadded(w *countWriter, b []byte) error {
	if _, err := w.Write(b); err != nil {
		return err
	}
	return pad(w)
}

// pad aligns the stream to 4 bytes, as newc wants after every name and every file body.
func pad(w *countWriter) error {
	if r := w.n % 4; r != 0 {
		_, err := w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
