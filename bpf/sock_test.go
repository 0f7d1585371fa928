package bpf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/test/topology"
)

// These tests load the programs, attach them to the cgroup of a simulated node (never the cgroup
// root) and send real traffic between that node's pods. Traffic stays inside the namespaces the
// topology makes; pins go to /sys/fs/bpf/<prefix>-sw and are removed when the test ends.

const bpffs = "/sys/fs/bpf"

// support is set by TestMain: the helper binaries, or why these tests cannot run.
var support *topology.Support

func TestMain(m *testing.M) {
	if os.Getenv(clientEnv) != "" {
		os.Exit(clientMain(os.Args[1:])) // this binary re-executed as a client inside a pod
	}
	onlyOldKernelTests()
	// Stale pins of killed runs go with their topology (topology cleans up bpffs
	// directories named with its prefix, like <prefix>-sw here).
	support = topology.PrepareTests("root, ip, nsenter, cgroup v2, bpffs and the eBPF kernel features", kernelPrerequisites)
	os.Exit(support.Run(m))
}

func kernelPrerequisites() error {
	if err := MountBPFFS(bpffs); err != nil {
		return err
	}
	return Probe()
}

func requireKernel(t *testing.T) {
	t.Helper()
	support.Require(t)
}

// ---- the scenario ----

const (
	clientPod = "client"
	svcTCP    = "172.30.0.10:80"
	svcUDP    = "172.30.0.10:53"
	svcReject = "172.30.0.11:80"
	svcAff    = "172.30.0.12:80"
	svcDrop   = "172.30.0.13:80"
	svcTCP6   = "[fd00:30::10]:80"
	svcUDP6   = "[fd00:30::10]:53"

	pod1TCP = "10.0.1.1:8080"
	pod2TCP = "10.0.1.2:8080"
	pod1UDP = "10.0.1.1:5353"
	pod2UDP = "10.0.1.2:5353"
	pod6TCP = "[fd00:10::1]:8080"
	pod6UDP = "[fd00:10::1]:5353"
)

var podPorts = []topology.Port{{Protocol: "TCP", Port: 8080}, {Protocol: "UDP", Port: 5353}}

func scenario() topology.Scenario {
	return topology.Scenario{
		Node: topology.Node{Name: "node-a", IPs: []string{"192.168.0.2", "2001:db8::2"}},
		Pods: []topology.Pod{
			{Name: "p1", IP: "10.0.1.1", Local: true, Ports: podPorts},
			{Name: "p2", IP: "10.0.1.2", Local: true, Ports: podPorts},
			{Name: "p6", IP: "fd00:10::1", Local: true, Ports: podPorts},
			{Name: clientPod, IP: "10.0.1.100", IPv6: "fd00:10::100", Local: true},
		},
	}
}

// env is one running test setup.
type env struct {
	topo   *topology.Topology
	pinDir string
	objs   *Objects
}

// setup builds the topology, loads and attaches the programs with a fresh pin directory, and
// programs the services. Everything is removed when the test ends, whatever happens.
func setup(t *testing.T) *env {
	t.Helper()
	topo := support.Build(t, scenario())
	e := &env{topo: topo, pinDir: filepath.Join(bpffs, topo.Prefix()+"-sw")}
	// Registered before Load so a failure halfway leaves no pin either; runs before topo.Close.
	t.Cleanup(func() {
		if e.objs != nil {
			if err := e.objs.Close(); err != nil {
				t.Errorf("close objects: %v", err)
			}
		}
		if err := Unpin(e.pinDir); err != nil {
			t.Errorf("unpin: %v", err)
		}
	})
	var err error
	if e.objs, err = Load(LoadOptions{PinDir: e.pinDir, MaxServices: 1024, MaxBackends: 1024}); err != nil {
		t.Fatal(err)
	}
	if n := e.objs.Services.MaxEntries(); n != 1024 {
		t.Fatalf("services map: %d entries, want the 1024 asked for", n)
	}
	if err := e.objs.Attach(topo.NodeCgroup()); err != nil {
		t.Fatal(err)
	}
	programServices(t, e.objs)
	return e
}

// Backend ids of the scenario.
const (
	beP1TCP = iota + 1
	beP2TCP
	beP1UDP
	beP2UDP
	beP6TCP
	beP6UDP
)

// Service ids (affinity keys).
const (
	idTCP = iota + 1
	idUDP
	idReject
	idAff
	idDrop
	idTCP6
	idUDP6
	idRejectUDP
)

func programServices(t *testing.T, o *Objects) {
	t.Helper()
	for id, addr := range map[uint32]string{
		beP1TCP: pod1TCP, beP2TCP: pod2TCP, beP1UDP: pod1UDP, beP2UDP: pod2UDP, beP6TCP: pod6TCP, beP6UDP: pod6UDP,
	} {
		proto := uint8(unix.IPPROTO_TCP)
		if id == beP1UDP || id == beP2UDP || id == beP6UDP {
			proto = unix.IPPROTO_UDP
		}
		ap := netip.MustParseAddrPort(addr)
		be := sockBackend{Addr: ap.Addr().As16(), Port: netPort(ap.Port()), Proto: proto}
		if err := o.Backends.Put(id, &be); err != nil {
			t.Fatalf("backend %d: %v", id, err)
		}
	}
	putService(t, o, svcTCP, unix.IPPROTO_TCP, sockSvcVal{SvcId: idTCP}, beP1TCP, beP2TCP)
	putService(t, o, svcUDP, unix.IPPROTO_UDP, sockSvcVal{SvcId: idUDP}, beP1UDP, beP2UDP)
	putService(t, o, svcReject, unix.IPPROTO_TCP, sockSvcVal{SvcId: idReject, Flags: 1})
	putService(t, o, svcReject, unix.IPPROTO_UDP, sockSvcVal{SvcId: idRejectUDP, Flags: 1})
	putService(t, o, svcDrop, unix.IPPROTO_TCP, sockSvcVal{SvcId: idDrop, Flags: 2})
	putService(t, o, svcAff, unix.IPPROTO_TCP, sockSvcVal{SvcId: idAff, AffinityTimeout: 60}, beP1TCP, beP2TCP)
	putService(t, o, svcTCP6, unix.IPPROTO_TCP, sockSvcVal{SvcId: idTCP6}, beP6TCP)
	putService(t, o, svcUDP6, unix.IPPROTO_UDP, sockSvcVal{SvcId: idUDP6}, beP6UDP)
}

// putService writes the backend slots, then the service entry with their count (the writer's
// make-before-break order).
func putService(t *testing.T, o *Objects, frontend string, proto uint8, head sockSvcVal, backendIDs ...uint32) {
	t.Helper()
	for i, id := range backendIDs {
		if err := o.Services.Put(svcKey(frontend, proto, uint16(i+1)), &sockSvcVal{BackendId: id}); err != nil {
			t.Fatalf("%s slot %d: %v", frontend, i+1, err)
		}
	}
	head.Count = uint16(len(backendIDs))
	if err := o.Services.Put(svcKey(frontend, proto, 0), &head); err != nil {
		t.Fatalf("%s: %v", frontend, err)
	}
}

func svcKey(frontend string, proto uint8, slot uint16) sockSvcKey {
	ap := netip.MustParseAddrPort(frontend)
	return sockSvcKey{Addr: ap.Addr().As16(), Port: netPort(ap.Port()), Proto: proto, Slot: slot}
}

// netPort is a port as the maps hold it: the network-order bytes read as a host-order uint16.
func netPort(p uint16) uint16 { return p>>8 | p<<8 }

// ---- probing ----

func (e *env) probe(t *testing.T, ns, proto, dst string, n int, timeout time.Duration) []topology.ProbeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n)*timeout+10*time.Second)
	defer cancel()
	res, err := e.topo.Probe(ctx, ns, proto, dst, topology.ProbeOptions{N: n, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != n {
		t.Fatalf("probe %s %s: %d results, want %d", proto, dst, len(res), n)
	}
	return res
}

// endpoints counts the results per endpoint, failing the test on any result but "ok".
func endpoints(t *testing.T, what string, res []topology.ProbeResult) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, r := range res {
		if r.Result != "ok" {
			t.Fatalf("%s: %+v", what, r)
		}
		got[r.Endpoint]++
	}
	return got
}

func wantEndpoints(t *testing.T, what string, got map[string]int, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s reached %v, want exactly %v", what, got, want)
		return
	}
	for _, w := range want {
		if got[w] == 0 {
			t.Errorf("%s reached %v, want exactly %v", what, got, want)
			return
		}
	}
}

func (e *env) clientNS() string { return e.topo.PodNS(clientPod) }

// ---- the tests ----

func TestProbeFeatures(t *testing.T) {
	if err := Probe(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

func TestLoadUnpinned(t *testing.T) {
	requireKernel(t)
	o, err := Load(LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	for m, want := range map[*ebpf.Map]uint32{
		o.Services: DefaultMaxServices, o.Backends: DefaultMaxBackends, o.RevNAT: 262144, o.Affinity: 262144,
	} {
		if m.MaxEntries() != want {
			t.Errorf("%v: %d entries, want %d", m, m.MaxEntries(), want)
		}
		if m.IsPinned() {
			t.Errorf("%v pinned without a PinDir", m)
		}
	}
}

// Unpin finishes what another run left half-done, and has nothing to do twice.
func TestUnpinMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "none")
	if err := Unpin(dir); err != nil {
		t.Fatal(err)
	}
}

func TestSocketLB(t *testing.T) {
	e := setup(t)
	ns := e.clientNS()

	t.Run("tcp spreads over both backends", func(t *testing.T) {
		res := e.probe(t, ns, "tcp", svcTCP, 24, time.Second)
		wantEndpoints(t, svcTCP, endpoints(t, svcTCP, res), pod1TCP, pod2TCP)
		for _, r := range res {
			// No NAT on the wire: the backend sees the client's own address.
			if !strings.HasPrefix(r.Peer, "10.0.1.100:") || r.Peer != r.Local {
				t.Errorf("backend saw the client as %s, the client is %s", r.Peer, r.Local)
			}
		}
	})
	t.Run("udp spreads over both backends", func(t *testing.T) {
		// The probe's socket is connected: connect4 translates, and the reply's source (the
		// backend) matches what the socket is connected to.
		res := e.probe(t, ns, "udp", svcUDP, 24, time.Second)
		wantEndpoints(t, svcUDP, endpoints(t, svcUDP, res), pod1UDP, pod2UDP)
	})
	t.Run("no backend is refused", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			r := e.probe(t, ns, proto, svcReject, 1, time.Second)[0]
			if r.Result != "refused" || !strings.Contains(r.Error, "connection refused") {
				t.Errorf("%s %s: %+v, want refused (ECONNREFUSED)", proto, svcReject, r)
			}
		}
	})
	t.Run("unconnected udp is refused at sendmsg", func(t *testing.T) {
		for _, family := range []string{"4", "mapped"} {
			r := e.runClient(t, family, "udp", false, svcReject, 1)[0]
			if r.Err != "send: connection refused" {
				t.Errorf("sendto %s from an AF_INET%s socket: %+v, want ECONNREFUSED", svcReject,
					map[string]string{"4": "", "mapped": "6"}[family], r)
			}
		}
	})
	t.Run("drop fails fast as a timeout", func(t *testing.T) {
		start := time.Now()
		r := e.probe(t, ns, "tcp", svcDrop, 1, 5*time.Second)[0]
		if r.Result != "timeout" || !strings.Contains(r.Error, "timed out") {
			t.Errorf("%s: %+v, want timeout (ETIMEDOUT)", svcDrop, r)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("took %v: the connect should fail at once", d)
		}
	})
	t.Run("ipv6", func(t *testing.T) {
		res := e.probe(t, ns, "tcp", svcTCP6, 4, time.Second)
		wantEndpoints(t, svcTCP6, endpoints(t, svcTCP6, res), pod6TCP)
		res = e.probe(t, ns, "udp", svcUDP6, 4, time.Second)
		wantEndpoints(t, svcUDP6, endpoints(t, svcUDP6, res), pod6UDP)
	})
	t.Run("other frontends untouched", func(t *testing.T) {
		// A pod reached directly, the service IP on a port it does not serve, another protocol.
		wantEndpoints(t, pod1TCP, endpoints(t, pod1TCP, e.probe(t, ns, "tcp", pod1TCP, 2, time.Second)), pod1TCP)
		for _, c := range []struct{ proto, dst string }{
			{"tcp", "172.30.0.10:81"}, {"tcp", "172.30.0.99:80"}, {"tcp", svcUDP}, {"udp", svcTCP},
		} {
			// Untranslated, the packets go to the node's default gateway, which forwards nothing.
			r := e.probe(t, ns, c.proto, c.dst, 1, 300*time.Millisecond)[0]
			if r.Result != "timeout" {
				t.Errorf("%s %s: %+v, want it left alone (a timeout)", c.proto, c.dst, r)
			}
		}
	})
	t.Run("client sees the service address", func(t *testing.T) {
		e.testServiceAddress(t)
	})
	t.Run("affinity", func(t *testing.T) {
		e.testAffinity(t)
	})
}

// testServiceAddress checks getpeername and recvmsg: connected and unconnected sockets, IPv4,
// IPv6 and IPv4 through a dual-stack socket (the *6 hooks with IPv4-mapped addresses).
func (e *env) testServiceAddress(t *testing.T) {
	for _, c := range []struct {
		family, proto string
		connected     bool
		dst           string
		backends      []string
	}{
		{"4", "tcp", true, svcTCP, []string{pod1TCP, pod2TCP}},
		{"mapped", "tcp", true, svcTCP, []string{pod1TCP, pod2TCP}},
		{"6", "tcp", true, svcTCP6, []string{pod6TCP}},
		{"4", "udp", true, svcUDP, []string{pod1UDP, pod2UDP}},
		{"4", "udp", false, svcUDP, []string{pod1UDP, pod2UDP}},
		{"mapped", "udp", true, svcUDP, []string{pod1UDP, pod2UDP}},
		{"mapped", "udp", false, svcUDP, []string{pod1UDP, pod2UDP}},
		{"6", "udp", true, svcUDP6, []string{pod6UDP}},
		{"6", "udp", false, svcUDP6, []string{pod6UDP}},
	} {
		name := fmt.Sprintf("%s/%s/connected=%v %s", c.proto, c.family, c.connected, c.dst)
		got := map[string]int{}
		for _, r := range e.runClient(t, c.family, c.proto, c.connected, c.dst, 12) {
			if r.Err != "" {
				t.Errorf("%s: %s", name, r.Err)
				continue
			}
			got[r.Endpoint]++
			if c.connected && r.Peer != c.dst {
				t.Errorf("%s: getpeername %s, want the service address", name, r.Peer)
			}
			if c.proto == "udp" && r.From != c.dst {
				t.Errorf("%s: reply from %s, want the service address", name, r.From)
			}
		}
		wantEndpoints(t, name, got, c.backends...)
	}
}

// testAffinity checks ClientIP affinity: stickiness, the timeout, and that an entry whose backend
// left the service is not followed.
func (e *env) testAffinity(t *testing.T) {
	ns := e.clientNS()
	got := endpoints(t, svcAff, e.probe(t, ns, "tcp", svcAff, 10, time.Second))
	if len(got) != 1 {
		t.Fatalf("10 connections from one pod reached %v, want one backend", got)
	}
	key := e.affinityKey(t)

	// The entry decides, also when it was written behind the program's back; a use refreshes it.
	for _, c := range []struct {
		id   uint32
		want string
	}{{beP2TCP, pod2TCP}, {beP1TCP, pod1TCP}, {beP2TCP, pod2TCP}} {
		planted := monotonicNow() - uint64(50*time.Second)
		e.putAffinity(t, key, c.id, planted)
		wantEndpoints(t, "planted affinity", endpoints(t, svcAff, e.probe(t, ns, "tcp", svcAff, 2, time.Second)), c.want)
		var v sockAffinityVal
		// planted wraps around in a guest up for less than 50 s; the program compares differences.
		if err := e.objs.Affinity.Lookup(&key, &v); err != nil || int64(v.LastUsedNs-planted) <= 0 {
			t.Errorf("affinity entry %+v (%v) was not refreshed", v, err)
		}
	}
	// Expired (older than the 60 s timeout): a fresh random pick, so sooner or later the other one.
	moved := false
	for i := 0; i < 20 && !moved; i++ {
		e.putAffinity(t, key, beP1TCP, monotonicNow()-uint64(61*time.Second))
		r := e.probe(t, ns, "tcp", svcAff, 1, time.Second)[0]
		moved = r.Result == "ok" && r.Endpoint == pod2TCP
	}
	if !moved {
		t.Errorf("an expired affinity entry was still followed 20 times")
	}
	// The backend left the service: the live entry naming it is ignored and replaced.
	e.putAffinity(t, key, beP1TCP, monotonicNow())
	putService(t, e.objs, svcAff, unix.IPPROTO_TCP, sockSvcVal{SvcId: idAff, AffinityTimeout: 60}, beP2TCP)
	wantEndpoints(t, "backend gone", endpoints(t, svcAff, e.probe(t, ns, "tcp", svcAff, 3, time.Second)), pod2TCP)
	var v sockAffinityVal
	if err := e.objs.Affinity.Lookup(&key, &v); err != nil || v.BackendId != beP2TCP {
		t.Errorf("affinity entry %+v (%v), want it moved to backend %d", v, err, beP2TCP)
	}
}

// affinityKey finds the client pod's entry for the affinity service (its key holds the pod's
// network namespace cookie, which only the kernel knows).
func (e *env) affinityKey(t *testing.T) sockAffinityKey {
	t.Helper()
	var k, found sockAffinityKey
	var v sockAffinityVal
	n := 0
	it := e.objs.Affinity.Iterate()
	for it.Next(&k, &v) {
		if k.SvcId == idAff {
			found = k
			n++
		}
	}
	if err := it.Err(); err != nil || n != 1 || found.NetnsCookie == 0 {
		t.Fatalf("affinity entries for service %d: %d (%v), want 1", idAff, n, err)
	}
	return found
}

func (e *env) putAffinity(t *testing.T, k sockAffinityKey, backend uint32, lastUsed uint64) {
	t.Helper()
	if err := e.objs.Affinity.Put(&k, &sockAffinityVal{BackendId: backend, LastUsedNs: lastUsed}); err != nil {
		t.Fatal(err)
	}
}

// TestRestart shows the dataplane outlives its loader: closing the objects leaves the programs
// attached, a new Load reuses the pinned maps with their contents, and Attach takes over the
// pinned links in place. Unpin then removes everything.
func TestRestart(t *testing.T) {
	e := setup(t)
	ns := e.clientNS()
	check := func(when string) {
		t.Helper()
		wantEndpoints(t, when, endpoints(t, when, e.probe(t, ns, "tcp", svcTCP, 12, time.Second)), pod1TCP, pod2TCP)
	}
	check("before the restart")
	oldIDs := e.attachedIDs(t)

	if err := e.objs.Close(); err != nil {
		t.Fatal(err)
	}
	e.objs = nil
	check("with no loader running")

	o, err := Load(LoadOptions{PinDir: e.pinDir, MaxServices: 1024, MaxBackends: 1024})
	if err != nil {
		t.Fatal(err)
	}
	e.objs = o
	var v sockSvcVal
	if err := o.Services.Lookup(svcKey(svcTCP, unix.IPPROTO_TCP, 0), &v); err != nil || v.Count != 2 || v.SvcId != idTCP {
		t.Fatalf("service entry after the restart: %+v, %v", v, err)
	}
	if err := o.Attach(e.topo.NodeCgroup()); err != nil {
		t.Fatal(err)
	}
	newIDs := e.attachedIDs(t)
	for h, id := range newIDs {
		if id == oldIDs[h] {
			t.Errorf("%s: still runs the old program %d", h, id)
		}
		if want := progID(t, hookProg(o, h)); id != want {
			t.Errorf("%s: runs program %d, want the new one %d", h, id, want)
		}
	}
	check("after the restart")

	// A pinned map of another size is refused, with a hint.
	if _, err := Load(LoadOptions{PinDir: e.pinDir, MaxServices: 2048}); err == nil ||
		!strings.Contains(err.Error(), "cleanup") {
		t.Errorf("load with another map size: %v, want a refusal naming cleanup", err)
	}

	if err := Unpin(e.pinDir); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	e.objs = nil
	if _, err := os.Stat(e.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory after Unpin: %v", err)
	}
	if ids := e.attachedIDs(t); len(ids) != 0 {
		t.Errorf("still attached after Unpin: %v", ids)
	}
	r := e.probe(t, ns, "tcp", svcTCP, 1, 300*time.Millisecond)[0]
	if r.Result != "timeout" {
		t.Errorf("after Unpin: %+v, want the service address left alone (a timeout)", r)
	}
}

// attachedIDs returns the program attached to the node cgroup per hook, failing if there is more
// than one (a takeover must replace, not add).
func (e *env) attachedIDs(t *testing.T) map[string]ebpf.ProgramID {
	t.Helper()
	cg, err := os.Open(e.topo.NodeCgroup())
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	ids := map[string]ebpf.ProgramID{}
	for _, h := range hooks {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: h.attach})
		if err != nil {
			t.Fatal(err)
		}
		switch len(res.Programs) {
		case 0:
		case 1:
			ids[h.name] = res.Programs[0].ID
		default:
			t.Fatalf("%s: %d programs attached, want 1", h.name, len(res.Programs))
		}
	}
	return ids
}

func hookProg(o *Objects, name string) *ebpf.Program {
	for _, h := range hooks {
		if h.name == name {
			return h.prog(&o.objs.sockPrograms)
		}
	}
	return nil
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("no program id")
	}
	return id
}
