package restart

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/test/topology"
)

// The test binary doubles as a client that holds one TCP connection open across the restarts: it
// is re-executed inside the client pod's namespace, in the node's cgroup, with holdEnv set. It
// connects to the service, reads the echo server's line and then the server's close, and reports
// getpeername() (which the eBPF dataplane translates back to the service address) and the socket's
// TCP state; then, for every "check" line on its stdin, it reports them again. The echo server
// closes after its line, so no data can flow later; what a restart could break is the socket's
// reverse translation (state the agent keeps in a pinned map), and that is what getpeername shows.

const holdEnv = "SWITCHYARD_RESTART_TEST_HOLD"

type holdReport struct {
	Peer     string `json:"peer,omitempty"`     // getpeername()
	Endpoint string `json:"endpoint,omitempty"` // the backend's own address, from its reply (first report)
	State    string `json:"state,omitempty"`    // TCP state from TCP_INFO
	Err      string `json:"err,omitempty"`
}

func holdMain(args []string) int {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	dst := fs.String("dst", "", "IP:PORT (IPv4)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ap, err := netip.ParseAddrPort(*dst)
	if err != nil || !ap.Addr().Is4() {
		fmt.Fprintln(os.Stderr, "hold: -dst wants an IPv4 IP:PORT:", *dst)
		return 2
	}
	enc := json.NewEncoder(os.Stdout)
	fd, r := holdConnect(ap)
	if err := enc.Encode(r); err != nil || fd < 0 {
		return 1
	}
	defer unix.Close(fd)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() != "check" {
			continue
		}
		if err := enc.Encode(holdInspect(fd)); err != nil {
			return 1
		}
	}
	return 0
}

// holdConnect opens the connection; fd is -1 when that failed (the report says why).
func holdConnect(dst netip.AddrPort) (int, holdReport) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, holdReport{Err: "socket: " + err.Error()}
	}
	fail := func(op string, err error) (int, holdReport) {
		unix.Close(fd)
		return -1, holdReport{Err: op + ": " + err.Error()}
	}
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return fail("setsockopt", err)
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}); err != nil {
		return fail("connect", err)
	}
	// The whole reply, up to the server's close, so the state reported is settled (CLOSE_WAIT).
	var reply []byte
	buf := make([]byte, 512)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return fail("read", err)
		}
		if n == 0 {
			break
		}
		reply = append(reply, buf[:n]...)
	}
	f := strings.Fields(string(reply))
	if len(f) != 2 {
		return fail("reply", fmt.Errorf("malformed %q", reply))
	}
	r := holdInspect(fd)
	r.Endpoint = f[0]
	return fd, r
}

func holdInspect(fd int) holdReport {
	var r holdReport
	peer, err := unix.Getpeername(fd)
	if err != nil {
		r.Err = "getpeername: " + err.Error()
		return r
	}
	if sa, ok := peer.(*unix.SockaddrInet4); ok {
		r.Peer = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	} else {
		r.Peer = fmt.Sprintf("%T", peer)
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		r.Err = "TCP_INFO: " + err.Error()
		return r
	}
	r.State = tcpStates[info.State]
	if r.State == "" {
		r.State = fmt.Sprint(info.State)
	}
	return r
}

var tcpStates = map[uint8]string{
	1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
	7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}

// holder is the running holding client, seen from the test.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	once  sync.Once
}

// startHolder starts the holding client in ns and returns its first report.
func startHolder(t *testing.T, ctx context.Context, topo *topology.Topology, ns, dst string) (*holder, holdReport) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := topo.CommandContext(ctx, ns, exe, "-dst", dst)
	// A race-enabled binary otherwise sleeps a second at exit (GORACE atexit_sleep_ms).
	cmd.Env = append(os.Environ(), holdEnv+"=1", "GORACE=atexit_sleep_ms=0")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Start(cmd); err != nil {
		t.Fatal(err)
	}
	h := &holder{cmd: cmd, stdin: stdin, lines: make(chan string, 4)}
	t.Cleanup(h.stop)
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	return h, h.report(t)
}

// check asks the client for a fresh report.
func (h *holder) check(t *testing.T) holdReport {
	t.Helper()
	if _, err := io.WriteString(h.stdin, "check\n"); err != nil {
		t.Fatalf("holding client: %v", err)
	}
	return h.report(t)
}

func (h *holder) report(t *testing.T) holdReport {
	t.Helper()
	select {
	case line, ok := <-h.lines:
		if !ok {
			t.Fatal("holding client: exited early")
		}
		var r holdReport
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("holding client: output %q: %v", line, err)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("holding client: no report within 10s")
	}
	return holdReport{}
}

// stop closes its stdin, which ends it, and reaps it.
func (h *holder) stop() {
	h.once.Do(func() {
		_ = h.stdin.Close()
		done := make(chan struct{})
		go func() {
			// Drain, so that the reader ends.
			for range h.lines {
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = h.cmd.Process.Kill()
		}
		var ee *exec.ExitError
		if err := h.cmd.Wait(); err != nil && !errors.As(err, &ee) {
			fmt.Fprintln(os.Stderr, "holding client:", err)
		}
	})
}

func (r holdReport) String() string {
	b, _ := json.Marshal(r)
	return string(b)
}
