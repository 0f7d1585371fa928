package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/test/topology"
)

// The backend against a real kernel with IPVS, in a simulated node: every
// kernel call goes to the node's network namespace (IPVS and netlink sockets
// opened there, iptables run there through nsenter, go-iptables and sysctls on
// a thread switched into it). The root namespace is never touched.
//
// This host's kernel has no IPVS, so these tests run in a VM (test/vm), which
// says so with SWITCHYARD_VM=1:
//
//	SWITCHYARD_VM=1 CGO_ENABLED=0 go test -exec "$(pwd)/bin/vmrun -kernel 6.1" -run Kernel ./ipvs/
//
// Elsewhere they skip, CI=true or not: a host kernel without IPVS is not a
// broken machine.

const vmEnv = "SWITCHYARD_VM"

// requireIPVS skips unless in the VM, where IPVS missing is a failure.
func requireIPVS(t *testing.T) {
	t.Helper()
	if os.Getenv(vmEnv) != "1" {
		t.Skipf("the IPVS kernel tests run in a VM with %s=1 (test/vm); this host's kernel need not have IPVS", vmEnv)
	}
	if err := Supported(); err != nil {
		t.Fatalf("in the VM: %v", err)
	}
	support.Require(t)
	for _, tool := range []string{"iptables-nft-restore", "iptables-nft-save", "iptables-nft", "ip6tables-nft-restore", "ip6tables-nft-save", "ip6tables-nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("in the VM: %v", err)
		}
	}
}

const (
	nodeIP4   = "192.168.0.2"
	nodeIP6   = "fd00::2"
	clientIP4 = "203.0.113.10"
)

func kernelScenario() topology.Scenario {
	port := []topology.Port{{Protocol: "TCP", Port: 8080}}
	return topology.Scenario{
		Node:       topology.Node{Name: nodeName, IPs: []string{nodeIP4, nodeIP6}},
		RemoteNode: topology.Node{Name: "node-b", IPs: []string{"192.168.0.3", "fd00::3"}},
		Pods: []topology.Pod{
			{Name: "p1", IP: "10.0.1.1", IPv6: "fd00:10::1", Local: true, Ports: port},
			{Name: "p2", IP: "10.0.2.1", IPv6: "fd00:10::2", Local: false, Ports: port},
		},
		External: []topology.Client{{IP: clientIP4}},
	}
}

// A ClusterIP and NodePort service with two pods (one on the node, one on the
// other node), one without endpoints, one with affinity; clients in a pod, on
// the node and outside it.
func TestKernelServesClusterIPAndNodePort(t *testing.T) {
	requireIPVS(t)
	topo := support.Build(t, kernelScenario())
	n := newKernelNode(t, topo)
	b, err := NewBackend(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	sync := func(cs *dataplane.ChangeSet, st *dataplane.State) {
		t.Helper()
		if err := n.inNode(func() error { return b.Sync(context.Background(), st, cs) }); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if err := n.inNode(func() error { return b.Cleanup(context.Background()) }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	c := newCluster(modelConfig())
	c.st.Node.IPs = []netip.Addr{netip.MustParseAddr(nodeIP4), netip.MustParseAddr(nodeIP6)}
	web6 := service("ns", "web6", "fd00:96::1")
	c.set("ns", "web6", web6, endpoints(web6, 8080, "fd00:10::1/l", "fd00:10::2"))
	web := service("ns", "web", "172.30.0.1", withNodePort(30080))
	c.put(web, "10.0.1.1/l", "10.0.2.1")
	c.put(service("ns", "empty", "172.30.0.2", withNodePort(30081)))
	c.put(service("ns", "sticky", "172.30.0.3", withAffinity(300)), "10.0.1.1/l", "10.0.2.1")
	// Local policies with the only endpoint elsewhere.
	c.put(service("ns", "itp", "172.30.0.4", withITPLocal), "10.0.2.1")
	c.put(service("ns", "etp", "172.30.0.5", withNodePort(30082), withETPLocal(0)), "10.0.2.1")
	sync(nil, c.st)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	both := []string{"10.0.1.1:8080", "10.0.2.1:8080"}
	// A pod reaches both pods, itself too (hairpin, masqueraded), keeping its
	// address to the other one.
	probeReaches(ctx, t, topo, topo.PodNS("p1"), "172.30.0.1:80", both, func(r topology.ProbeResult) string {
		ip, _, _ := strings.Cut(r.Peer, ":")
		switch {
		case r.Endpoint == "10.0.2.1:8080" && ip != "10.0.1.1":
			return "a pod's connection to a pod elsewhere was masqueraded"
		case r.Endpoint == "10.0.1.1:8080" && ip == "10.0.1.1":
			return "a hairpin connection was not masqueraded"
		}
		return ""
	})
	// The node itself.
	probeReaches(ctx, t, topo, topo.NodeNS(), "172.30.0.1:80", both, nil)
	// IPv6: the address on the device works as a destination.
	both6 := []string{"[fd00:10::1]:8080", "[fd00:10::2]:8080"}
	probeReaches(ctx, t, topo, topo.PodNS("p1"), "[fd00:96::1]:80", both6, nil)
	probeReaches(ctx, t, topo, topo.NodeNS(), "[fd00:96::1]:80", both6, nil)
	// An outside client through the NodePort, masqueraded to the node's address.
	probeReaches(ctx, t, topo, topo.ExternalNS(clientIP4), nodeIP4+":30080", both, func(r topology.ProbeResult) string {
		if ip, _, _ := strings.Cut(r.Peer, ":"); ip != nodeIP4 {
			return "a NodePort connection was not masqueraded to the node's address"
		}
		return ""
	})
	// Affinity: every connection of one client goes to one pod.
	res := probe(ctx, t, topo, topo.PodNS("p1"), "172.30.0.3:80", 8)
	for _, r := range res {
		if r.Result != "ok" || r.Endpoint != res[0].Endpoint {
			t.Errorf("affinity: %+v after %+v", r, res[0])
		}
	}
	// Refused: a service without endpoints (from a pod, the node, outside), and
	// a port the cluster IP does not serve.
	for _, p := range []struct{ ns, dst string }{
		{topo.PodNS("p1"), "172.30.0.2:80"}, {topo.NodeNS(), "172.30.0.2:80"},
		{topo.ExternalNS(clientIP4), nodeIP4 + ":30081"}, {topo.PodNS("p1"), "172.30.0.1:22"},
	} {
		if r := probe(ctx, t, topo, p.ns, p.dst, 1); r[0].Result != "refused" {
			t.Errorf("%s from %s: %+v, want refused", p.dst, p.ns, r[0])
		}
	}

	// internalTrafficPolicy Local: dropped for everyone, the node included (in
	// mangle OUTPUT, before IPVS takes the node's own connections).
	// externalTrafficPolicy Local: outside clients dropped, pods and the node
	// reach the endpoint elsewhere.
	for _, p := range []struct{ ns, dst, want string }{
		{topo.PodNS("p1"), "172.30.0.4:80", "timeout"}, {topo.NodeNS(), "172.30.0.4:80", "timeout"},
		{topo.ExternalNS(clientIP4), nodeIP4 + ":30082", "timeout"},
		{topo.PodNS("p1"), nodeIP4 + ":30082", "ok"}, {topo.NodeNS(), nodeIP4 + ":30082", "ok"},
	} {
		if r := probe(ctx, t, topo, p.ns, p.dst, 1); r[0].Result != p.want {
			t.Errorf("%s from %s: %+v, want %s", p.dst, p.ns, r[0], p.want)
		}
	}

	// A full sync over what the kernel holds writes nothing: what IPVS reads back
	// (flags, timeouts, weights) is what was written.
	n.ipvs.writes = nil
	sync(nil, c.st)
	if len(n.ipvs.writes) != 0 {
		t.Errorf("a full sync over a correct kernel wrote %v", n.ipvs.writes)
	}

	// The pod elsewhere goes: a partial sync, and only the local pod is reached.
	sync(c.put(web, "10.0.1.1/l"), c.st)
	probeReaches(ctx, t, topo, topo.ExternalNS(clientIP4), nodeIP4+":30080", both[:1], nil)
	// It had connections (closed ones in TIME_WAIT count): quiesced, not deleted.
	dests, err := n.ipvs.Destinations(key(nodeIP4 + ":30080/TCP"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dests {
		if d.Addr.String() == "10.0.2.1" && (d.Weight != 0 || d.ActiveConns+d.InactiveConns == 0) {
			t.Errorf("the removed pod's destination: %+v, want weight 0 while it has connections", d)
		}
	}
	t.Logf("destinations after the pod elsewhere went: %v", dests)

	// A restarted agent takes over what it finds; then cleanup leaves nothing.
	b2, err := NewBackend(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.ipvs.writes = nil
	if err := n.inNode(func() error { return b2.Sync(context.Background(), c.st, nil) }); err != nil {
		t.Fatal(err)
	}
	for _, w := range n.ipvs.writes {
		if !strings.HasPrefix(w, "DeleteDestination 172.30.0.1:80/TCP") && !strings.HasPrefix(w, "DeleteDestination 192.168.0.2:30080/TCP") &&
			!strings.HasPrefix(w, "UpdateDestination") {
			t.Errorf("the restarted agent wrote %s", w)
		}
	}
	if err := n.inNode(func() error { return b2.Cleanup(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	svcs, err := n.ipvs.Services()
	if err != nil || len(svcs) != 0 {
		t.Errorf("virtual services after cleanup: %v, %v", svcs, err)
	}
	if _, err := n.links.Addrs(DefaultDevice); !errors.Is(err, ErrNoDevice) {
		t.Errorf("the device after cleanup: %v", err)
	}
	for _, save := range []string{"iptables-nft-save", "ip6tables-nft-save"} {
		out, err := topo.Run(ctx, topo.NodeNS(), save)
		if err != nil || strings.Contains(out, Prefix) {
			t.Errorf("%s after cleanup (%v):\n%s", save, err, out)
		}
	}
}

func probe(ctx context.Context, t *testing.T, topo *topology.Topology, ns, dst string, n int) []topology.ProbeResult {
	t.Helper()
	res, err := topo.Probe(ctx, ns, "tcp", dst, topology.ProbeOptions{N: n, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// probeReaches makes 16 connections from ns to dst: each must work and pass
// check (which says what is wrong, or ""), and together they must reach
// exactly want.
func probeReaches(ctx context.Context, t *testing.T, topo *topology.Topology, ns, dst string, want []string, check func(topology.ProbeResult) string) {
	t.Helper()
	got := map[string]bool{}
	for _, r := range probe(ctx, t, topo, ns, dst, 16) {
		if r.Result != "ok" {
			t.Errorf("%s from %s: %+v", dst, ns, r)
			continue
		}
		got[r.Endpoint] = true
		if check != nil {
			if msg := check(r); msg != "" {
				t.Errorf("%s from %s: %s: %+v", dst, ns, msg, r)
			}
		}
	}
	if fmt.Sprint(keysOf(got)) != fmt.Sprint(want) {
		t.Errorf("%s from %s reached %v, want %v", dst, ns, keysOf(got), want)
	}
}

func keysOf(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The fakes' steps (fake_test.go) on the real kernel: the same outcomes.
func TestKernelMatchesFakes(t *testing.T) {
	requireIPVS(t)
	topo := support.Build(t, topology.Scenario{Node: topology.Node{Name: nodeName, IPs: []string{nodeIP4}}})
	path := topology.NetnsPath(topo.NodeNS())
	h, err := NewKernelIPVS(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, fake := ipvsSteps(h), ipvsSteps(NewFakeIPVS()); !slices.Equal(got, fake) {
		t.Errorf("IPVS: the kernel\n%s\nthe fake\n%s", strings.Join(got, "\n"), strings.Join(fake, "\n"))
	}
	l, err := NewKernelLinks(path)
	if err != nil {
		t.Fatal(err)
	}
	fake := NewFakeLinks(map[string][]netip.Addr{topo.NodeUplink(): {netip.MustParseAddr(nodeIP4)}})
	if got, want := linksSteps(l, topo.NodeUplink()), linksSteps(fake, topo.NodeUplink()); !slices.Equal(got, want) {
		t.Errorf("netlink: the kernel\n%s\nthe fake\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// --mode=ipvs on a kernel without IPVS fails at start, saying what to do; the
// library alone would succeed and then do nothing. Where the kernel has IPVS (the
// VMs), the handle opens. Neither touches the namespace: the handle only asks.
func TestNewKernelIPVSSaysWhenThereIsNoIPVS(t *testing.T) {
	h, err := NewKernelIPVS("")
	if Supported() == nil {
		if err != nil || h == nil {
			t.Fatalf("the kernel has IPVS, but: %v", err)
		}
		return // the handle's socket lives as long as the test binary, as the agent's does
	}
	if !errors.Is(err, ErrNoIPVS) || !strings.Contains(err.Error(), "--mode=iptables") {
		t.Errorf("without IPVS: %v, want ErrNoIPVS naming --mode=iptables", err)
	}
}
