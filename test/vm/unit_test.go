package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// readNewc parses a newc archive back: name -> mode, body.
func readNewc(t *testing.T, b []byte) (names []string, modes map[string]uint32, bodies map[string]string) {
	t.Helper()
	modes, bodies = map[string]uint32{}, map[string]string{}
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic at %d: %q", off, h[:6])
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		mode, size, nameSize := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+nameSize-1])
		off = align(off + 110 + nameSize)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return
		}
		names = append(names, name)
		modes[name], bodies[name] = uint32(mode), string(b[off:off+size])
		off = align(off + size)
	}
}

func TestArchiveParentsFirst(t *testing.T) {
	src := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := newArchive()
	a.addFile("/usr/bin/tool", src, 0o755)
	a.addSymlink("/bin", "usr/bin")
	a.addData("/etc/x", []byte("abc"), 0o600)
	a.addCharDev("/dev/console", 5, 1)
	var buf bytes.Buffer
	n, err := a.writeTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("writeTo = %d, %v; wrote %d", n, err, buf.Len())
	}
	names, modes, bodies := readNewc(t, buf.Bytes())
	want := []string{"bin", "dev", "dev/console", "etc", "etc/x", "usr", "usr/bin", "usr/bin/tool"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("entries %v, want %v", names, want)
	}
	for name, w := range map[string]struct {
		mode uint32
		body string
	}{
		"usr/bin/tool": {sIFREG | 0o755, "hello"}, "bin": {sIFLNK | 0o777, "usr/bin"},
		"etc/x": {sIFREG | 0o600, "abc"}, "usr": {sIFDIR | 0o755, ""}, "dev/console": {sIFCHR | 0o600, ""},
	} {
		if modes[name] != w.mode || bodies[name] != w.body {
			t.Errorf("%s: mode %o body %q, want %o %q", name, modes[name], bodies[name], w.mode, w.body)
		}
	}
}

func TestResolveModules(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"modules.dep": "kernel/net/ip_vs.ko.xz: kernel/net/nf_conntrack.ko.xz kernel/lib/libcrc32c.ko.xz\n" +
			"kernel/net/nf_conntrack.ko.xz: kernel/lib/libcrc32c.ko.xz\nkernel/lib/libcrc32c.ko.xz:\n" +
			"kernel/net/xt_MASQUERADE.ko.xz: kernel/net/nf_conntrack.ko.xz kernel/lib/libcrc32c.ko.xz\n" +
			"kernel/drivers/dummy.ko.xz:\n",
		"modules.alias":   "alias ipt_MASQUERADE xt_MASQUERADE\nalias foo nope\n",
		"modules.builtin": "kernel/net/bridge.ko\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := resolveModules(dir, []string{"ip_vs", "ipt_MASQUERADE", "bridge", "nope", "ip-vs"}, []string{"kernel/drivers/"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantOrder := []string{"kernel/lib/libcrc32c.ko.xz", "kernel/net/nf_conntrack.ko.xz", "kernel/net/ip_vs.ko.xz",
		"kernel/net/xt_MASQUERADE.ko.xz", "kernel/drivers/dummy.ko.xz"}
	if !reflect.DeepEqual(ms.ship, wantOrder) || !reflect.DeepEqual(ms.preload, wantOrder[:4]) || !reflect.DeepEqual(ms.builtin, []string{"bridge"}) ||
		!reflect.DeepEqual(ms.missing, []string{"nope"}) {
		t.Fatalf("ship %v preload %v builtin %v missing %v", ms.ship, ms.preload, ms.builtin, ms.missing)
	}
	dep := string(ms.depFile())
	if !strings.Contains(dep, "kernel/net/ip_vs.ko: kernel/net/nf_conntrack.ko kernel/lib/libcrc32c.ko\n") || strings.Contains(dep, ".xz") {
		t.Errorf("modules.dep for the guest:\n%s", dep)
	}
	if !reflect.DeepEqual(ms.alias, []string{"alias ipt_MASQUERADE xt_MASQUERADE"}) {
		t.Errorf("aliases %q", ms.alias)
	}
}

func TestSystemSourcesParsing(t *testing.T) {
	dir := t.TempDir()
	deb822 := filepath.Join(dir, "debian.sources")
	list := filepath.Join(dir, "extra.list")
	os.WriteFile(deb822, []byte("Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"+
		"Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"+
		"Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n"), 0o644)
	os.WriteFile(list, []byte("deb [arch=amd64 signed-by=/k.gpg] http://sec.example/debian-security bookworm-security main\n"), 0o644)
	got := append(parseDeb822(deb822), parseOneLine(list)...)
	want := []sourceEntry{
		{uri: "http://mirror.example/debian", suites: []string{"bookworm", "bookworm-updates"}, signedBy: "/usr/share/keyrings/debian-archive-keyring.gpg"},
		{uri: "http://sec.example/debian-security", suites: []string{"bookworm-security"}, signedBy: "/k.gpg"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("entries\n%+v\nwant\n%+v", got, want)
	}
	m := mirrors{archive: "http://a", security: "http://s", keyring: "/k"}
	if l := m.sourcesList(); !strings.Contains(l, "deb [signed-by=/k] http://a bullseye main\n") ||
		!strings.Contains(l, "deb [signed-by=/k] http://s bookworm-security main\n") || strings.Count(l, "\n") != 4 {
		t.Errorf("sources list:\n%s", l)
	}
}
