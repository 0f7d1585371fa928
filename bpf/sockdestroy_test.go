package bpf

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const udpHoldEnv = "SWITCHYARD_BPF_TEST_UDP_HOLD"

// udpHoldMain connects a UDP socket to its argument, says "ready", then waits
// for a datagram or an error and prints which.
func udpHoldMain(dst string) int {
	ap, err := netip.ParseAddrPort(dst)
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready")
	_, _, err = unix.Recvfrom(fd, make([]byte, 64), 0)
	fmt.Println("recv:", err)
	return 0
}

// holdUDP starts a connected UDP socket in the client pod and returns its output.
func (e *env) holdUDP(t *testing.T, ctx context.Context, dst string) *bufio.Scanner {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := e.topo.CommandContext(ctx, e.clientNS(), exe, dst)
	cmd.Env = append(os.Environ(), udpHoldEnv+"=1", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.topo.Start(cmd); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("UDP holder for %s: %q", dst, sc.Text())
	}
	return sc
}

// Destroying the sockets of removed backends: a UDP socket connected through the
// service to a backend is destroyed (its read fails); one connected elsewhere is not.
func TestDestroyUDPSockets(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	viaService := e.holdUDP(t, ctx, svcUDP)
	elsewhere := e.holdUDP(t, ctx, "10.0.1.1:9999")

	d := SocketDestroyer{Cgroup: e.topo.NodeCgroup()}
	if err := d.Destroy([]netip.AddrPort{netip.MustParseAddrPort(pod1UDP), netip.MustParseAddrPort(pod2UDP)}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		viaService.Scan()
		got <- viaService.Text()
	}()
	select {
	case line := <-got:
		if !strings.Contains(line, "connection abort") {
			t.Errorf("the socket connected to a removed backend: %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Error("the socket connected to a removed backend was not destroyed")
	}
	other := make(chan string, 1)
	go func() {
		elsewhere.Scan()
		other <- elsewhere.Text()
	}()
	select {
	case line := <-other:
		t.Errorf("a socket connected elsewhere was touched: %q", line)
	case <-time.After(500 * time.Millisecond):
	}
}
