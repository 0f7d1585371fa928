package bpf

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a client that shows what the application sees (the probe only
// reports what the backend saw): it is re-executed inside a pod's namespace, in the node's
// cgroup, with clientEnv set. It uses raw sockets, so the address family and the syscalls are
// exactly the ones each hook is about: connect() + getpeername() (TCP and connected UDP),
// sendto() + recvfrom() (unconnected UDP, and recvfrom() on connected UDP), on AF_INET, on
// AF_INET6 and on AF_INET6 towards an IPv4-mapped address ("mapped").

const clientEnv = "SWITCHYARD_BPF_TEST_CLIENT"

type clientResult struct {
	Endpoint string `json:"endpoint,omitempty"` // the backend's own address, from its reply
	Peer     string `json:"peer,omitempty"`     // getpeername(), connected sockets
	From     string `json:"from,omitempty"`     // recvfrom()'s source, UDP
	Err      string `json:"err,omitempty"`
}

func (e *env) runClient(t *testing.T, family, proto string, connected bool, dst string, n int) []clientResult {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n)*2*time.Second+10*time.Second)
	defer cancel()
	args := []string{"-family", family, "-proto", proto, "-dst", dst, "-n", fmt.Sprint(n)}
	if connected {
		args = append(args, "-connected")
	}
	cmd := e.topo.CommandContext(ctx, e.clientNS(), exe, args...)
	// A race-enabled binary otherwise sleeps a second at exit (GORACE atexit_sleep_ms).
	cmd.Env = append(os.Environ(), clientEnv+"=1", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("client %v: %v: %s", args, err, stderr)
	}
	var res []clientResult
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var r clientResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("client output %q: %v", sc.Text(), err)
		}
		res = append(res, r)
	}
	if len(res) != n {
		t.Fatalf("client %v: %d results, want %d", args, len(res), n)
	}
	return res
}

func clientMain(args []string) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	family := fs.String("family", "4", "4, 6 or mapped (AF_INET6 to an IPv4 address)")
	proto := fs.String("proto", "tcp", "tcp or udp")
	connected := fs.Bool("connected", false, "connect the UDP socket")
	dst := fs.String("dst", "", "IP:PORT")
	n := fs.Int("n", 1, "connections")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ap, err := netip.ParseAddrPort(*dst)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	enc := json.NewEncoder(os.Stdout)
	for i := 0; i < *n; i++ {
		if err := enc.Encode(clientOnce(*family, *proto, *connected, ap)); err != nil {
			return 1
		}
	}
	return 0
}

func clientOnce(family, proto string, connected bool, dst netip.AddrPort) (r clientResult) {
	fail := func(op string, err error) clientResult {
		r.Err = op + ": " + err.Error()
		return r
	}
	domain, typ := unix.AF_INET6, unix.SOCK_DGRAM
	if family == "4" {
		domain = unix.AF_INET
	}
	if proto == "tcp" {
		typ = unix.SOCK_STREAM
	}
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(time.Second))
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return fail("setsockopt", err)
		}
	}
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}
	if domain == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	}
	if proto == "tcp" || connected {
		if err := connect(fd, sa); err != nil {
			return fail("connect", err)
		}
		peer, err := unix.Getpeername(fd)
		if err != nil {
			return fail("getpeername", err)
		}
		r.Peer = sockaddrString(peer)
	}
	buf := make([]byte, 512)
	var n int
	if proto == "tcp" {
		n, err = retryEINTR(func() (int, error) { return unix.Read(fd, buf) }) // the echo server writes its line at once
		if err != nil {
			return fail("read", err)
		}
	} else {
		msg := []byte("probe\n")
		if connected {
			_, err = unix.Write(fd, msg)
		} else {
			err = unix.Sendto(fd, msg, 0, sa)
		}
		if err != nil {
			return fail("send", err)
		}
		var from unix.Sockaddr
		n, err = retryEINTR(func() (n int, err error) {
			n, from, err = unix.Recvfrom(fd, buf, 0)
			return n, err
		})
		if err != nil {
			return fail("recvfrom", err)
		}
		r.From = sockaddrString(from)
	}
	f := strings.Fields(string(buf[:n]))
	if len(f) != 2 {
		return fail("reply", fmt.Errorf("malformed %q", buf[:n]))
	}
	r.Endpoint = f[0]
	return r
}

// connect is a blocking connect that a signal (the Go runtime's preemption, often
// under a slow emulated CPU) may interrupt: the connection goes on, and asking
// again says whether it is done.
func connect(fd int, sa unix.Sockaddr) error {
	deadline := time.Now().Add(2 * time.Second)
	err := unix.Connect(fd, sa)
	for (err == unix.EINTR || err == unix.EALREADY) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		err = unix.Connect(fd, sa)
	}
	if err == unix.EISCONN {
		return nil
	}
	return err
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}

// sockaddrString prints IPv4-mapped addresses as IPv4, like the probe and the echo server.
func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port)).String()
	}
	return fmt.Sprintf("%T", sa)
}
