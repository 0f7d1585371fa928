package bpf

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Destroying the sockets of removed backends: a UDP socket connected through the
// service to a backend is destroyed (its read fails); one connected elsewhere is not.
func TestDestroyUDPSockets(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	viaService, err := e.topo.HoldUDP(ctx, e.clientNS(), svcUDP)
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := e.topo.HoldUDP(ctx, e.clientNS(), "10.0.1.1:9999")
	if err != nil {
		t.Fatal(err)
	}

	d := SocketDestroyer{Cgroup: e.topo.NodeCgroup()}
	if err := d.Destroy([]netip.AddrPort{netip.MustParseAddrPort(pod1UDP), netip.MustParseAddrPort(pod2UDP)}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-viaService:
		if !strings.Contains(r.Error, "connection abort") {
			t.Errorf("the socket connected to a removed backend: %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Error("the socket connected to a removed backend was not destroyed")
	}
	select {
	case r := <-elsewhere:
		t.Errorf("a socket connected elsewhere was touched: %+v", r)
	case <-time.After(500 * time.Millisecond):
	}
}
