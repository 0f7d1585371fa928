package bpf

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/test/topology"
)

// A masqueraded flow's translated tuples are written to the node's conntrack, so that kube-proxy's
// masquerade, taking the new connections while the programs drain, sees its port as taken.
func TestHoldFlowPorts(t *testing.T) {
	pinDir := testPinDir(t, "hold")
	e := newNATEnvWith(t, LoadOptions{PinDir: pinDir, MaxServices: 1024, MaxBackends: 1024})
	ret, fwd := e.run(t, e.objs.TC.ExtIngress, tcp(client4, npTCP))
	if ret != tcRedirect {
		t.Fatalf("a SYN: %d, want a new flow", ret)
	}
	h, err := topology.NetlinkHandle(e.ns, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if n, err := HoldFlowPorts(pinDir, h, time.Minute); n != 1 || err != nil {
		t.Fatalf("HoldFlowPorts = %d, %v; want the one flow", n, err)
	}
	flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	pod := ap(pod1TCP)
	for _, f := range flows {
		src, _ := netip.AddrFromSlice(f.Reverse.SrcIP)
		dst, _ := netip.AddrFromSlice(f.Reverse.DstIP)
		if netip.AddrPortFrom(src.Unmap(), f.Reverse.SrcPort) == pod && netip.AddrPortFrom(dst.Unmap(), f.Reverse.DstPort) == fwd.src {
			return
		}
	}
	t.Errorf("no conntrack entry with the reply tuple %s -> %s among %d: %v", pod, fwd.src, len(flows), flows)
}

// testPinDir is a pin directory of this run's own, unpinned when the test ends (registered before
// anything is pinned there, so a failure halfway leaves nothing).
func testPinDir(t *testing.T, name string) string {
	dir := filepath.Join(bpffs, fmt.Sprintf("sy-%s-%d", name, os.Getpid()))
	t.Cleanup(func() {
		if err := Unpin(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}
