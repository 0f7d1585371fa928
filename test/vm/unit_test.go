package vm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
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

// consoleOf is what boot makes of a kernel console transcript.
func consoleOf(t *testing.T, transcript string) *bootResult {
	t.Helper()
	r := &bootResult{}
	r.readConsole(strings.NewReader(transcript), time.Now(), &Options{Stderr: io.Discard})
	return r
}

// A 6.12 guest that died at boot under multi-threaded TCG (issue 12): a static key patched on
// one vCPU left an int3 in the code another one ran, before the init got to any program.
const bootDeath = "[    0.000000] Linux version 6.12.57+deb12-cloud-amd64\r\n" +
	"[    1.190422] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\r\n" +
	"[    1.190422] CPU: 1 UID: 0 PID: 0 Comm: swapper/1 Not tainted 6.12.57+deb12-cloud-amd64 #1  Debian 6.12.57-1~bpo12+1\r\n" +
	"[    1.190422] RIP: 0010:enqueue_timer+0x1f/0x120\r\n" +
	"[    1.190422] Code: 48 89 f3 48 83 ec 08 <cc> 44 00 00 48 8b 46 08\r\n" +
	"[    1.190422] RIP: 0010:default_idle+0x9/0x20\r\n" +
	"[    1.203117] Kernel panic - not syncing: Fatal exception in interrupt\r\n"

const initStarted = "vmrun-init: start uptime=2.51\r\n" +
	"vmrun-init: modules n=12 took=0.40s uptime=2.92\r\n" +
	"vmrun-init: run 0 /vmrun/bin/0/netfilter.test uptime=2.93\r\n"

func TestBootDeathBeforeTheTestIsRetried(t *testing.T) {
	r := consoleOf(t, "vmrun-init: start uptime=1.02\r\n"+bootDeath)
	if !r.diedBeforeStart(errNoStatus) {
		t.Fatalf("a guest that died at boot, before any program: not booted again (started %v)", r.started)
	}
	if got, want := r.deathReason(), "Oops: int3: 0000 [#1] PREEMPT SMP NOPTI, RIP: 0010:enqueue_timer+0x1f/0x120"; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
	if r.diedBeforeStart(errors.New("qemu exited 1: qemu-system-x86_64: -smp: bad")) {
		t.Error("qemu's own failure is booted again")
	}
}

func TestDeathAfterTheTestStartedIsAFailure(t *testing.T) {
	r := consoleOf(t, initStarted+"=== RUN TestX\r\n"+bootDeath)
	if !r.started || r.diedBeforeStart(errNoStatus) {
		t.Fatalf("a guest that died once the program started would be booted again (started %v)", r.started)
	}
	if r := consoleOf(t, initStarted+"vmrun-init: exit 0 code=0 uptime=3.5\r\nvmrun-init: done rc=0 uptime=3.5\r\n"); !r.done || r.diedBeforeStart(nil) {
		t.Errorf("a guest that finished: done %v, booted again %v", r.done, r.diedBeforeStart(nil))
	}
}

func TestBootRetrying(t *testing.T) {
	early, late := consoleOf(t, bootDeath), consoleOf(t, initStarted+bootDeath)
	fine := consoleOf(t, initStarted+"vmrun-init: done rc=3 uptime=4\r\n")
	for _, c := range []struct {
		name   string
		boots  []*bootResult
		want   int // boots made
		err    bool
		notice int // "booting again" lines
	}{
		{"died at boot, then ran", []*bootResult{early, fine}, 2, false, 1},
		{"died after the start", []*bootResult{late, fine}, 1, true, 0},
		{"died at every boot", []*bootResult{early, early, early, fine}, bootAttempts, true, bootAttempts - 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stderr strings.Builder
			o := &Options{Kernel: &Kernel{Release: "6.12.57+deb12-cloud-amd64"}, Stderr: &stderr}
			n := 0
			br, err := bootRetrying(o, func() (*bootResult, error) {
				br := c.boots[n]
				n++
				if br.done {
					return br, nil
				}
				return br, errNoStatus
			})
			if n != c.want || (err != nil) != c.err || br != c.boots[n-1] {
				t.Errorf("%d boots, error %v; want %d boots, error %v", n, err, c.want, c.err)
			}
			notice := "vmrun: kernel 6.12.57+deb12-cloud-amd64: the guest died before the test started (Oops: int3: 0000 [#1] PREEMPT SMP NOPTI, RIP: 0010:enqueue_timer+0x1f/0x120), booting again (boot 2 of at most 3)\n"
			if got := strings.Count(stderr.String(), "booting again"); got != c.notice || (c.notice > 0 && !strings.HasPrefix(stderr.String(), notice)) {
				t.Errorf("stderr:\n%s\nwant %d notices starting with\n%s", stderr.String(), c.notice, notice)
			}
		})
	}
}
