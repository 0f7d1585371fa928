package restart

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/loadgen"
	"github.com/switchyard/switchyard/test/topology"
)

// The external scenario: a client outside the cluster, the node under test with one pod of the
// service, and a remote node with the other. The service is a NodePort with externalTrafficPolicy
// Cluster, so the client's connections are masqueraded to the node address, whichever pod they
// reach (the remote one through the node, both ways).
const (
	extClient  = "203.0.113.10"
	extNodeIP  = "192.168.0.2"
	remoteNode = "node-b"
	localPod   = "web-local"
	remotePod  = "web-remote"
	localIP    = "10.0.1.1"
	remoteIP   = "10.0.2.1"
	greetPort  = 8080 // the echo server's one-line greeting: the probe's new connections
	rrPort     = 9090 // its request/reply port (echo -tcp-rr): the long-lived connections
	greetNP    = 30080
	rrNP       = 30090
)

var (
	greetFrontend = fmt.Sprintf("%s:%d", extNodeIP, greetNP)
	rrFrontend    = fmt.Sprintf("%s:%d", extNodeIP, rrNP)
	greetBackends = []string{fmt.Sprintf("%s:%d", localIP, greetPort), fmt.Sprintf("%s:%d", remoteIP, greetPort)}
	rrBackends    = []string{fmt.Sprintf("%s:%d", localIP, rrPort), fmt.Sprintf("%s:%d", remoteIP, rrPort)}
)

func externalScenario() topology.Scenario {
	// The topology starts the greeting server; the request/reply one is started by the test.
	ports := []topology.Port{{Protocol: "TCP", Port: greetPort}, {Protocol: topology.ProtocolTCPRequestReply, Port: rrPort}}
	return topology.Scenario{
		Node:       topology.Node{Name: nodeName, IPs: []string{extNodeIP}},
		RemoteNode: topology.Node{Name: remoteNode, IPs: []string{"192.168.0.3"}},
		Pods: []topology.Pod{
			{Name: localPod, IP: localIP, Local: true, Ports: ports},
			{Name: remotePod, IP: remoteIP, Local: false, Ports: ports},
		},
		External: []topology.Client{{IP: extClient}},
	}
}

// externalObjects: the node, and the NodePort service "web" (ports greet and rr) on both pods.
func externalObjects() flow.Objects {
	return nodePortObjects("restart-external", "web", "172.30.0.40", []flow.ServicePort{
		{Name: "greet", Protocol: "TCP", Port: 80, TargetPort: greetPort, NodePort: greetNP},
		{Name: "rr", Protocol: "TCP", Port: 90, TargetPort: rrPort, NodePort: rrNP},
	}, endpoint(localIP, nodeName), endpoint(remoteIP, remoteNode))
}

// nodePortObjects: the node, and NodePort service svc (externalTrafficPolicy Cluster) with ports on
// the endpoints, each port's pod port its targetPort.
func nodePortObjects(caseName, svc, clusterIP string, ports []flow.ServicePort, eps ...flow.Endpoint) flow.Objects {
	sl := flow.EndpointSlice{Namespace: "default", Service: svc, Name: svc + "-1", AddressType: "IPv4", Endpoints: eps}
	for _, p := range ports {
		sl.Ports = append(sl.Ports, flow.EndpointPort{Name: p.Name, Protocol: p.Protocol, Port: p.TargetPort})
	}
	c := flow.Case{
		Name: caseName,
		Node: flow.Node{Name: nodeName, IPs: []string{extNodeIP}},
		Services: []flow.Service{{Namespace: "default", Name: svc, Type: "NodePort", ClusterIP: clusterIP,
			ExternalTrafficPolicy: "Cluster", Ports: ports}},
		EndpointSlices: []flow.EndpointSlice{sl},
	}
	return c.ToObjects()
}

// endpoint is a ready endpoint on node.
func endpoint(ip, node string) flow.Endpoint {
	return flow.Endpoint{Addresses: []string{ip}, Ready: ptr.To(true), Serving: ptr.To(true),
		Terminating: ptr.To(false), NodeName: ptr.To(node)}
}

// The long-lived connections: this many, each with a request every interval, for this long
// (which must outlast the restarts: the test checks it did).
const (
	longLivedConns    = 4
	longLivedInterval = 100 * time.Millisecond
	longLivedFor      = 14 * time.Second
)

// restartLongLived are the long-lived connections across restarts, to either pod.
var restartLongLived = persistentSpec{conns: longLivedConns, interval: longLivedInterval, lasts: longLivedFor,
	endpoints: rrBackends}

// TestKill9UnderExternalLoad restarts the agent twice with kill -9 (as TestKill9UnderLoad does)
// while a client outside the cluster opens new connections to a NodePort back to back and keeps
// a few long-lived connections to another port of it busy, a request every 100ms. This traffic
// goes through the tc programs and their pinned connection tracking (map "ct"), not the socket
// hooks. Every new connection must reach a pod, masqueraded, in every phase, and both pods must
// be reached; the long-lived connections must be the same sockets after the restarts as before
// and none of their requests may fail; the tc programs must never leave the node's devices.
func TestKill9UnderExternalLoad(t *testing.T) {
	requirePrereqs(t)
	if loadgenErr != nil {
		t.Fatalf("building the load generator: %v", loadgenErr)
	}
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel) // not deferred: see TestKill9UnderLoad

	topo := buildTopology(t, externalScenario())
	ag := newAgents(t, topo, externalObjects())
	ag.start(t, ctx)
	client := topo.ExternalNS(extClient)

	ll := startLongLived(t, ctx, topo, client, rrFrontend, restartLongLived)
	conns := ll.waitEstablished(t, ctx)
	t.Logf("long-lived connections (local addresses): %v", conns)

	progs := watchPrograms(t, tcHooks(topo, localPod))
	st := startStream(t, ctx, topo, streamSpec{ns: client, dst: greetFrontend, endpoints: greetBackends, peerIP: extNodeIP})
	// A baseline of 2s before the first kill: a failure there is none of the restarts' doing (one
	// seen so far: a masquerade port reused while the pod still has its last connection in
	// TIME_WAIT, which answers the new SYN with an ACK of the old one).
	restartTwice(t, ctx, ag, st, 2*time.Second, func(when string) { ll.checkSame(t, ctx, conns, "after "+when) })

	checkStream(t, st.stop(t), greetBackends)
	checkPrograms(t, progs.stop())
	logTCEvents(t, ctx, topo)
	ll.check(t, ll.wait(t))
	t.Logf("runtime %v", time.Since(begin).Round(time.Millisecond))
}

// logTCEvents logs what the tc programs counted (switchyard_bpf_tc_events_total, from the running
// agent; the counters are pinned, so they add up over the restarts): a drop shows there.
func logTCEvents(t *testing.T, ctx context.Context, topo *topology.Topology) map[string]float64 {
	t.Helper()
	evs, err := tcEvents(ctx, topo)
	if err != nil {
		t.Errorf("the agent's metrics: %v", err)
		return nil
	}
	var list []string
	for _, name := range slices.Sorted(maps.Keys(evs)) {
		list = append(list, fmt.Sprintf("%s=%g", name, evs[name]))
	}
	t.Logf("tc events over the whole test: %s", strings.Join(list, " "))
	return evs
}

// tcEvents reads switchyard_bpf_tc_events_total from the running agent, by event.
func tcEvents(ctx context.Context, topo *topology.Topology) (map[string]float64, error) {
	metrics, err := topo.Run(ctx, topo.NodeNS(), "curl", "-s", "--max-time", "2", "http://127.0.0.1:10249/metrics")
	if err != nil {
		return nil, err
	}
	evs := map[string]float64{}
	for _, l := range strings.Split(metrics, "\n") {
		rest, ok := strings.CutPrefix(l, "switchyard_bpf_tc_events_total{event=\"")
		if !ok {
			continue
		}
		name, value, ok := strings.Cut(rest, "\"} ")
		// Prometheus' text format writes large counts as floats (1.5e+06).
		n, err := strconv.ParseFloat(value, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("metrics: unexpected line %q", l)
		}
		evs[name] = n
	}
	if len(evs) == 0 {
		return nil, errors.New("metrics: no switchyard_bpf_tc_events_total")
	}
	return evs, nil
}

// ---- the long-lived connections ----

// longLived is the load generator (test/cmd/loadgen) in persistent mode: spec.conns connections,
// each sending a request every spec.interval and reading the answer. It replaces a connection that
// fails, and counts the failure.
type longLived struct {
	topo    *topology.Topology
	ns, dst string
	spec    persistentSpec
	cmd     *exec.Cmd
	started time.Time
	out     bytes.Buffer
	done    chan struct{} // closed once it has been reaped, with waitErr
	waitErr error
}

// persistentSpec is what long-lived connections do, and where their answers must come from.
type persistentSpec struct {
	conns           int
	interval, lasts time.Duration
	endpoints       []string
}

func startLongLived(t *testing.T, ctx context.Context, topo *topology.Topology, ns, dst string, spec persistentSpec) *longLived {
	t.Helper()
	l := &longLived{topo: topo, ns: ns, dst: dst, spec: spec, done: make(chan struct{})}
	l.cmd = topo.CommandContext(ctx, ns, loadgenBin, "-dst", dst, "-mode", "persistent",
		"-workers", strconv.Itoa(spec.conns), "-interval", spec.interval.String(),
		"-duration", spec.lasts.String(), "-timeout", "1s")
	l.cmd.Stdout, l.cmd.Stderr = &l.out, os.Stderr
	if err := topo.Start(l.cmd); err != nil {
		t.Fatal(err)
	}
	l.started = time.Now()
	go func() {
		l.waitErr = l.cmd.Wait()
		close(l.done)
	}()
	t.Cleanup(func() {
		select {
		case <-l.done:
		default:
			_ = l.cmd.Process.Kill()
			<-l.done
		}
	})
	return l
}

// established lists the local addresses of the client's established connections to dst, from ss
// in the client's namespace.
func (l *longLived) established(ctx context.Context) ([]string, error) {
	ap := netip.MustParseAddrPort(l.dst)
	out, err := l.topo.Run(ctx, l.ns, "ss", "-Htn", "state", "established", "dst", ap.Addr().String(),
		"dport", "=", ":"+strconv.Itoa(int(ap.Port())))
	if err != nil {
		return nil, err
	}
	var locals []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var addrs []string
		for _, f := range strings.Fields(line) {
			if _, err := netip.ParseAddrPort(f); err == nil {
				addrs = append(addrs, f)
			}
		}
		if len(addrs) == 2 && addrs[1] == l.dst {
			locals = append(locals, addrs[0])
		} else if strings.TrimSpace(line) != "" {
			return nil, fmt.Errorf("ss: unexpected line %q", line)
		}
	}
	slices.Sort(locals)
	return locals, nil
}

// waitEstablished waits until every connection is established, and returns them.
func (l *longLived) waitEstablished(t *testing.T, ctx context.Context) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conns, err := l.established(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(conns) == l.spec.conns {
			return conns
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d long-lived connections to %s established after 5s (%v), want %d", len(conns), l.dst, conns, l.spec.conns)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkSame: the connections established now are the ones of before (a connection the load
// generator had to replace has another local port).
func (l *longLived) checkSame(t *testing.T, ctx context.Context, before []string, when string) {
	t.Helper()
	if left := l.spec.lasts - time.Since(l.started); left < time.Second {
		t.Fatalf("long-lived connections %s: the load generator's %v are (nearly) over, the test took too long to cover the restarts", when, l.spec.lasts)
	}
	now, err := l.established(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("long-lived connections %s: %v", when, now)
	if !slices.Equal(now, before) {
		t.Errorf("long-lived connections %s: %v, want the same as before the restarts %v", when, now, before)
	}
}

// loadResult is test/cmd/loadgen's output.
type loadResult = loadgen.Result

// wait waits for the load generator to finish and returns its result.
func (l *longLived) wait(t *testing.T) loadResult {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(time.Until(l.started.Add(l.spec.lasts + 10*time.Second))):
		t.Fatalf("the load generator did not end %v after its start", l.spec.lasts+10*time.Second)
	}
	if l.waitErr != nil {
		t.Fatalf("the load generator: %v", l.waitErr)
	}
	var r loadResult
	if err := json.Unmarshal(l.out.Bytes(), &r); err != nil {
		t.Fatalf("the load generator's output %q: %v", l.out.String(), err)
	}
	return r
}

// check: no request failed, no connection was replaced, every answer came from a pod and saw the
// node address as the client's (masquerade), and the requests kept their pace.
func (l *longLived) check(t *testing.T, r loadResult) {
	t.Helper()
	t.Logf("long-lived connections: %d answered requests in %.1fs on %d connections; %d failed %v; per pod %v; client seen as %v",
		r.Requests, r.Elapsed, r.Conns, r.Errors, r.ErrorKinds, r.Endpoints, r.Peers)
	if r.Errors > 0 || r.Conns != int64(l.spec.conns) {
		t.Errorf("long-lived connections: %d requests failed and %d connections were opened for %d workers "+
			"(each failure closes its connection and opens a new one); the first failure: %s",
			r.Errors, r.Conns, l.spec.conns, r.FirstError)
	}
	// Each connection sends a request, waits for the answer, pauses spec.interval.
	if want := int64(l.spec.conns) * int64(l.spec.lasts/l.spec.interval) / 2; r.Requests < want {
		t.Errorf("long-lived connections: %d answered requests, want at least %d", r.Requests, want)
	}
	for ep := range r.Endpoints {
		if !slices.Contains(l.spec.endpoints, ep) {
			t.Errorf("long-lived connections: answers from %s, not a pod of the service", ep)
		}
	}
	for peer := range r.Peers {
		if peer != extNodeIP {
			t.Errorf("long-lived connections: a pod saw the client as %s, want the node address %s (masquerade)", peer, extNodeIP)
		}
	}
}

// ---- the tc programs on the node's devices ----

// tcHooks samples the TCX programs the external traffic goes through, in the node's namespace:
// the uplink's ingress and egress (ext_ingress, ext_egress) and the host side of the local pod's
// veth (pod_ingress, where that pod's replies are translated back; pod_egress, the node's own
// connections to it).
func tcHooks(topo *topology.Topology, pod string) hookSampler {
	type hook struct {
		dev    string
		attach ebpf.AttachType
		want   string // the program's name
	}
	hooks := []hook{
		{topo.NodeUplink(), ebpf.AttachTCXIngress, "ext_ingress"},
		{topo.NodeUplink(), ebpf.AttachTCXEgress, "ext_egress"},
		{topo.PodHostIface(pod), ebpf.AttachTCXIngress, "pod_ingress"},
		{topo.PodHostIface(pod), ebpf.AttachTCXEgress, "pod_egress"},
	}
	what := fmt.Sprintf("the tc programs of %s and %s (ingress, egress)", hooks[0].dev, hooks[2].dev)
	return hookSampler{what: what, open: func() (func() (string, error), func(), error) {
		// The thread goes into the node's namespace for good (watchPrograms retires it): ifindexes
		// and BPF_PROG_QUERY on them are per namespace. It only queries; it sends nothing.
		ns, err := netns.GetFromPath(topology.NetnsPath(topo.NodeNS()))
		if err != nil {
			return nil, nil, err
		}
		if err := netns.Set(ns); err != nil {
			ns.Close()
			return nil, nil, err
		}
		cur, err := netns.Get()
		if err == nil && !cur.Equal(ns) {
			err = fmt.Errorf("the thread is not in %s after setns", topo.NodeNS())
		}
		cur.Close()
		ns.Close()
		if err != nil {
			return nil, nil, err
		}
		ifindex := map[string]int{}
		for _, h := range hooks {
			ifc, err := net.InterfaceByName(h.dev)
			if err != nil {
				return nil, nil, fmt.Errorf("%s in %s: %w", h.dev, topo.NodeNS(), err)
			}
			ifindex[h.dev] = ifc.Index
		}
		names := map[ebpf.ProgramID]string{}
		name := func(id ebpf.ProgramID) (string, error) {
			if n, ok := names[id]; ok {
				return n, nil
			}
			p, err := ebpf.NewProgramFromID(id)
			if err != nil {
				return "", err
			}
			defer p.Close()
			info, err := p.Info()
			if err != nil {
				return "", err
			}
			names[id] = info.Name
			return info.Name, nil
		}
		// What one hook has: the names of its programs; ok is false when a program went away
		// between the query and the lookup of its name (replaced: the sample is taken again).
		query := func(h hook) (have []string, ok bool, err error) {
			q, err := link.QueryPrograms(link.QueryOptions{Target: ifindex[h.dev], Attach: h.attach})
			if err != nil {
				return nil, false, fmt.Errorf("%s %s: %w", h.dev, h.attach, err)
			}
			for _, p := range q.Programs {
				n, err := name(p.ID)
				if errors.Is(err, os.ErrNotExist) {
					return nil, false, nil
				}
				if err != nil {
					return nil, false, fmt.Errorf("%s %s: program %d: %w", h.dev, h.attach, p.ID, err)
				}
				have = append(have, n)
			}
			return have, true, nil
		}
		sample := func() (string, error) {
			var missing []string
			for _, h := range hooks {
				var have []string
				for try := 0; ; try++ {
					var ok bool
					var err error
					if have, ok, err = query(h); err != nil {
						return "", err
					}
					if ok {
						break
					}
					if try == 10 {
						return "", fmt.Errorf("%s %s: its programs keep going away while being looked at", h.dev, h.attach)
					}
				}
				if !slices.Contains(have, h.want) {
					missing = append(missing, fmt.Sprintf("%s %s has %v, no %s", h.dev, h.attach, have, h.want))
				}
			}
			return strings.Join(missing, "; "), nil
		}
		return sample, func() {}, nil
	}}
}
