package bpf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/test/topology"
)

// The backend with its tc programs attached by itself in the node namespace, and
// real clients outside the node: a NodePort served by a local and a remote pod
// (masqueraded), a NodePort without endpoints (refused), and a pod that appears
// after the agent started (its veth gets the reply program).
func TestBackendServesExternalClients(t *testing.T) {
	// Real nodes often filter by reverse path; translated packets never meet the filter.
	for _, rp := range []int{0, 1} {
		t.Run(fmt.Sprintf("rp_filter=%d", rp), func(t *testing.T) { serveExternal(t, rp) })
	}
}

func serveExternal(t *testing.T, rpFilter int) {
	sc := topology.Scenario{
		RPFilter:   rpFilter,
		Node:       topology.Node{Name: "node-a", IPs: []string{nodeIP4}},
		RemoteNode: topology.Node{Name: "node-b", IPs: []string{"192.168.0.3"}},
		Pods: []topology.Pod{
			{Name: "p1", IP: "10.0.1.1", Local: true, Ports: podPorts},
			{Name: "r1", IP: "10.0.2.1", Local: false, Ports: podPorts},
		},
		External: []topology.Client{{IP: "203.0.113.10"}},
	}
	topo := support.Build(t, sc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pinDir := filepath.Join(bpffs, topo.Prefix()+"-ext")
	var b *Backend
	err := topology.OnThreadIn(topo.NodeNS(), func() (err error) {
		b, err = NewBackend(Config{PinDir: pinDir, CgroupPath: topo.NodeCgroup(), MaxServices: 64, MaxBackends: 64})
		return err
	})
	t.Cleanup(func() {
		if b != nil {
			if err := errors.Join(b.Cleanup(ctx), b.Close()); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	st := tcState()
	np := st.Frontends[dataplane.FrontendKey{Addr: netip.MustParseAddr(nodeIP4), Port: 30080, Protocol: "TCP"}]
	np.Outside.Backends = []dataplane.Endpoint{ep("10.0.1.1:8080"), ep("10.0.2.1:8080")}
	st.Node.IPs = []netip.Addr{netip.MustParseAddr(nodeIP4)}
	if err := b.Sync(ctx, st, nil); err != nil {
		t.Fatal(err)
	}
	client := topo.ExternalNS("203.0.113.10")
	res, err := topo.Probe(ctx, client, "tcp", npTCP, topology.ProbeOptions{N: 24, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range res {
		if r.Result != "ok" {
			t.Errorf("NodePort: %+v", r)
			continue
		}
		got[r.Endpoint] = true
		if ip, _, _ := splitHostPort(r.Peer); ip != nodeIP4 {
			t.Errorf("the backend saw %s, want the node address (masquerade)", r.Peer)
		}
	}
	if !got["10.0.1.1:8080"] || !got["10.0.2.1:8080"] {
		t.Errorf("NodePort reached %v, want the local and the remote pod", got)
	}
	res, err = topo.Probe(ctx, client, "tcp", npReject, topology.ProbeOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Result != "refused" {
		t.Errorf("a NodePort without endpoints: %+v, want refused", res[0])
	}

	// A device that appears later (a new pod's veth) gets the reply program.
	dev := topo.Prefix() + "nv0"
	if _, err := topo.Run(ctx, topo.NodeNS(), "ip", "link", "add", dev, "type", "veth", "peer", "name", topo.Prefix()+"nv1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n := 0; n == 0; {
		if n = attachedIngress(t, topo.NodeNS(), dev); n == 0 && time.Now().After(deadline) {
			t.Fatalf("no tc program on %s, which appeared after the agent started", dev)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// attachedIngress counts the ingress programs on a device of a namespace: TCX
// links, or on kernels without TCX (before 6.6) our clsact filters.
func attachedIngress(t *testing.T, ns, dev string) int {
	t.Helper()
	var n int
	err := topology.OnThreadIn(ns, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		r, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: ebpf.AttachTCXIngress})
		if err == nil {
			n = len(r.Programs)
			return nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		nl, err := netlink.LinkByIndex(ifc.Index)
		if err != nil {
			return err
		}
		filters, err := ourFilters(nl)
		for _, f := range filters {
			if f.Parent == netlink.HANDLE_MIN_INGRESS {
				n++
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func splitHostPort(s string) (string, string, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", "", err
	}
	return ap.Addr().String(), "", nil
}
