package bpf

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/test/topology"
)

// The backend with its tc programs attached by itself in the node namespace, and
// real clients outside the node: a NodePort served by a local and a remote pod
// (masqueraded), a NodePort without endpoints (refused), and a pod that appears
// after the agent started (its veth gets the reply program).
func TestBackendServesExternalClients(t *testing.T) {
	sc := topology.Scenario{
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
	err := inNetns(topo.NodeNS(), func() (err error) {
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
}

func splitHostPort(s string) (string, string, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", "", err
	}
	return ap.Addr().String(), "", nil
}
