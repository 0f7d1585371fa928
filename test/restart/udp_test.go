package restart

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
	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/test/flow"
)

const udpHoldEnv = "SWITCHYARD_RESTART_TEST_UDP_HOLD"

// udpHoldMain connects a UDP socket to its argument, says "ready", and reports
// what ends its wait for a datagram.
func udpHoldMain(dst string) int {
	ap, err := netip.ParseAddrPort(dst)
	if err != nil || !ap.Addr().Is4() {
		fmt.Println("error: want an IPv4 IP:PORT, got", dst)
		return 2
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ready")
	_, _, err = unix.Recvfrom(fd, make([]byte, 64), 0)
	fmt.Println("recv:", err)
	return 0
}

// withUDPService adds a UDP service 172.30.0.30:53 with the given endpoints (port 5353).
func withUDPService(o flow.Objects, endpoints ...string) flow.Objects {
	var eps []flow.Endpoint
	for _, ip := range endpoints {
		eps = append(eps, flow.Endpoint{Addresses: []string{ip}, Ready: ptr.To(true), NodeName: ptr.To(nodeName)})
	}
	c := flow.Case{
		Node: flow.Node{Name: nodeName, IPs: []string{"192.168.0.2"}},
		Services: []flow.Service{{Namespace: "default", Name: "dns", ClusterIP: "172.30.0.30",
			Ports: []flow.ServicePort{{Name: "dns", Protocol: "UDP", Port: 53, TargetPort: 5353}}}},
		EndpointSlices: []flow.EndpointSlice{{Namespace: "default", Service: "dns", Name: "dns-1",
			Ports: []flow.EndpointPort{{Name: "dns", Protocol: "UDP", Port: 5353}}, Endpoints: eps}},
	}
	u := c.ToObjects()
	o.Services = append(o.Services, u.Services...)
	o.EndpointSlices = append(o.EndpointSlices, u.EndpointSlices...)
	return o
}

// TestUDPSocketsOfRemovedBackendsAreDestroyed: a client's UDP socket connected
// through a service keeps sending to the backend chosen at connect(); when the
// service's backends go away, the agent destroys it, so the client notices.
func TestUDPSocketsOfRemovedBackendsAreDestroyed(t *testing.T) {
	requirePrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	topo := buildTopology(t, ctx)
	ag := newAgents(t, topo, withUDPService(objects(), "10.0.1.1", "10.0.1.2"))
	ag.start(t, ctx)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := topo.CommandContext(ctx, topo.PodNS(clientPod), exe, "172.30.0.30:53")
	cmd.Env = append(os.Environ(), udpHoldEnv+"=1", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Start(cmd); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	if l := <-lines; l != "ready" {
		t.Fatalf("UDP client: %q", l)
	}
	// The service loses every endpoint: whichever the socket got is gone.
	if err := withUDPService(objects()).WriteManifests(ag.manifests); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-lines:
		if !strings.Contains(l, "connection abort") {
			t.Errorf("the client's socket: %q, want it aborted", l)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("the socket connected to a removed backend was not destroyed\n%s", ag.logTail())
	}
}
