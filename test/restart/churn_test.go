package restart

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/topology"
)

// The churn scenario: the external client and the node of the external scenario, with one local pod
// serving three ports behind one NodePort service. externalTrafficPolicy is Cluster, so every
// connection is masqueraded to the node address with a source port the tc programs pick, and every
// connection goes to the same pod: one backend, the tightest case for the ports.
const (
	closePort = 9191 // echo -tcp-close: the pod closes first and holds TIME_WAIT
	udpPort   = 5353
	closeNP   = 30091
	udpNP     = 30053
)

var (
	closeFrontend = fmt.Sprintf("%s:%d", extNodeIP, closeNP)
	udpFrontend   = fmt.Sprintf("%s:%d", extNodeIP, udpNP)
	rrBackend     = fmt.Sprintf("%s:%d", localIP, rrPort)
	closeBackend  = fmt.Sprintf("%s:%d", localIP, closePort)
	udpBackend    = fmt.Sprintf("%s:%d", localIP, udpPort)
)

// soakEnv sets TestIdleConnectionsOutliveChurn's idle time (a Go duration; `make soak` says 5m).
const soakEnv = "SWITCHYARD_SOAK"

// The TCP cases run with a NodePort range that leaves the masquerade ports 20,536 (1024 and
// 45001-65535; the default leaves 61,744) and the node's own ephemeral ports 45001-60999 (the range
// is reserved to NodePorts). portLimitProof is how many connections a test must have made to have
// gone past those ports towards one backend, each once held for 65 s after its connection closed:
// past them, only ports used again can carry the connections.
const (
	churnNodePorts = "--node-port-range=1025-45000"
	churnMasqPorts = 20536
	oldUDPPorts    = 33512 // 1024-65535 without 30000-60999: the masquerade ports up to 5e58b4c
)

const portLimitProof = 35000

func churnScenario() topology.Scenario {
	return onePodScenario(topology.Port{Protocol: topology.ProtocolTCPRequestReply, Port: rrPort},
		topology.Port{Protocol: topology.ProtocolTCPCloseAfterReply, Port: closePort},
		topology.Port{Protocol: "UDP", Port: udpPort})
}

// onePodScenario: the node of the external scenario with one local pod serving ports, and the
// external client.
func onePodScenario(ports ...topology.Port) topology.Scenario {
	return topology.Scenario{
		Node:     topology.Node{Name: nodeName, IPs: []string{extNodeIP}},
		Pods:     []topology.Pod{{Name: localPod, IP: localIP, Local: true, Ports: ports}},
		External: []topology.Client{{IP: extClient}},
	}
}

// churnObjects: the node, and the NodePort service "churn" (ports rr, close and udp) on the one pod.
func churnObjects() flow.Objects {
	return nodePortObjects("churn", "churn", "172.30.0.50", []flow.ServicePort{
		{Name: "rr", Protocol: "TCP", Port: 90, TargetPort: rrPort, NodePort: rrNP},
		{Name: "close", Protocol: "TCP", Port: 91, TargetPort: closePort, NodePort: closeNP},
		{Name: "udp", Protocol: "UDP", Port: 53, TargetPort: udpPort, NodePort: udpNP},
	}, endpoint(localIP, nodeName))
}

// TestNewConnectionsPastThePortLimit opens 2,000 new connections a second for 20 s from outside to
// a NodePort whose one pod is on the node, masqueraded: 40,000 connections, past the masquerade
// ports towards that pod (see portLimitProof). A port must be free again once its connection is over, when
// the backend has no use for it any more: at once when the client closed first ("client closes":
// the client holds TIME_WAIT), after the backend's TIME_WAIT when the pod did ("server closes"), so
// the pod never sees a new connection on a tuple it still holds. Every connection must be answered,
// by the pod, seeing the node address; the tc programs must drop nothing for want of a port or of
// room in their connection tracking. "udp" sends 3,000 single-datagram exchanges a second (a new
// socket each) through the UDP port of the service, under the same rules: each flow holds its port
// 30 s, so ~39,000 at the end (the client's ports repeat), more than the 33,512 masquerade ports there
// were while the node's ephemeral range was kept out of them.
func TestNewConnectionsPastThePortLimit(t *testing.T) {
	requirePrereqs(t)
	if loadgenErr != nil {
		t.Fatalf("building the load generator: %v", loadgenErr)
	}
	for _, c := range []struct {
		name, dst, mode, backend string
		rate                     int
		closer                   string // TCP: who closes first, "client" or "pod"; these must go past the port limit
		args                     []string
	}{
		{"client closes", rrFrontend, "conn", rrBackend, 2000, "client", []string{churnNodePorts}},
		{"server closes", closeFrontend, "conn", closeBackend, 2000, "pod", []string{churnNodePorts}},
		// 30 s a flow, as conntrack: all alive at the end, so the default ports (61,744).
		{"udp", udpFrontend, "udp", udpBackend, 3000, "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			// A node of its own: a subtest that ran out of ports must not leave the next one without.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			t.Cleanup(cancel) // not deferred: see TestKill9UnderLoad
			topo := startChurnNode(t, ctx, c.args...)
			r := runLoad(t, ctx, topo, "-dst", c.dst, "-mode", c.mode, "-rate", strconv.Itoa(c.rate),
				"-duration", "20s", "-workers", "16", "-timeout", "1s")
			checkLoad(t, c.name, r, c.backend)
			if c.closer != "" {
				checkTimeWait(t, ctx, topo, c.closer == "pod", r.Requests)
			}
			if c.closer != "" && r.Requests < portLimitProof {
				t.Errorf("%s: %d connections answered, want at least %d: fewer do not go past the masquerade ports "+
					"(20,536, each once held for 65 s after its connection), so the test did not "+
					"test what it claims (no speed assertion: the load generator fell behind its %d a second, as "+
					"failures hold a worker for their 1s timeout, or the machine was too busy)",
					c.name, r.Requests, portLimitProof, c.rate)
			}
			evs := checkNoDrops(t, ctx, topo)
			if c.closer == "" && evs["new_flow"] < oldUDPPorts {
				t.Errorf("%s: %g flows (the client used some of its ports again: the same flow), want more than %d "+
					"alive at once, or the test did not test what it claims (see portLimitProof)", c.name, evs["new_flow"], oldUDPPorts)
			}
		})
	}
}

// TestIdleConnectionsOutliveChurn keeps 20 connections to the NodePort idle (a request, then none
// for 40 s, or SWITCHYARD_SOAK) while 1,000 new connections a second churn through the same port,
// with a connection tracking map of 4,096 flows (--bpf-ct-max): the churn's flows are far more
// than the map holds, and an idle open flow must not make room for them, or its next packet is a
// stranger to the node and the connection breaks. After the idle time each connection must answer
// its second request, on the same socket (none replaced), from the pod. The churning clients close
// first: a pod closing first would hold ~60,000 tuples in TIME_WAIT (60 s of churn), which no
// 4,096 flows can keep track of, and the churn itself would fail on ports taken over blind.
func TestIdleConnectionsOutliveChurn(t *testing.T) {
	requirePrereqs(t)
	if loadgenErr != nil {
		t.Fatalf("building the load generator: %v", loadgenErr)
	}
	idle := 40 * time.Second
	if s := os.Getenv(soakEnv); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 10*time.Second {
			t.Fatalf("%s=%q: want a duration of 10s or more, such as 5m", soakEnv, s)
		}
		idle = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), idle+2*time.Minute)
	t.Cleanup(cancel) // not deferred: see TestKill9UnderLoad
	topo := startChurnNode(t, ctx, "--bpf-ct-max=4096")

	// One request at the start, idle, one request at the end, then the load generator exits.
	const conns = 20
	spec := persistentSpec{conns: conns, interval: idle, lasts: idle + 2*time.Second, endpoints: []string{rrBackend}}
	ll := startLongLived(t, ctx, topo, topo.ExternalNS(extClient), rrFrontend, spec)
	t.Logf("idle connections (local addresses): %v", ll.waitEstablished(t, ctx))

	// The churn starts once the idle connections are idle, and goes on past their second request.
	time.Sleep(3 * time.Second)
	churn := runLoad(t, ctx, topo, "-dst", rrFrontend, "-mode", "conn", "-rate", "1000",
		"-duration", idle.String(), "-workers", "8", "-timeout", "1s")
	logLoad(t, "churn", churn)
	if churn.Errors > 0 {
		t.Errorf("the churn (not the idle connections): %d of %d new connections failed, the first %.1fs into it: %s",
			churn.Errors, churn.Conns, churn.FirstErrorAt, churn.FirstError)
	}

	r := ll.wait(t)
	ll.check(t, r)
	if r.Requests != 2*conns {
		t.Errorf("idle connections: %d requests answered, want 2 on each of the %d (before and after %v idle)", r.Requests, conns, idle)
	}
	logTCEvents(t, ctx, topo)
}

// startChurnNode builds the churn scenario and starts the agent in it with extraArgs.
func startChurnNode(t *testing.T, ctx context.Context, extraArgs ...string) *topology.Topology {
	t.Helper()
	topo := buildTopology(t, churnScenario())
	newAgents(t, topo, churnObjects(), extraArgs...).start(t, ctx)
	// What runs out must be the node's ports, not the client's: connect() may reuse the client's
	// own TIME_WAIT tuples after a second, from a wide range (both per namespace; as bench-nodeport).
	if _, err := topo.Run(ctx, topo.ExternalNS(extClient), "sh", "-c",
		"echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse && echo '1024 65535' > /proc/sys/net/ipv4/ip_local_port_range"); err != nil {
		t.Fatal(err)
	}
	return topo
}

// runLoad runs the load generator in the external client's namespace until it ends.
func runLoad(t *testing.T, ctx context.Context, topo *topology.Topology, args ...string) loadResult {
	t.Helper()
	cmd := topo.CommandContext(ctx, topo.ExternalNS(extClient), loadgenBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := topo.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("loadgen %s: %v", strings.Join(args, " "), err)
	}
	var r loadResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("loadgen's output %q: %v", out.String(), err)
	}
	return r
}

func logLoad(t *testing.T, what string, r loadResult) {
	t.Helper()
	t.Logf("%s: %d answered in %.1fs (%.0f/s) on %d connections, latency p50 %.2f ms, p99 %.2f ms; %d failed %v; "+
		"answered by %v; client seen as %v", what, r.Requests, r.Elapsed, r.RPS, r.Conns, r.P50Ms, r.P99Ms, r.Errors,
		r.ErrorKinds, r.Endpoints, r.Peers)
}

// checkLoad: nothing failed, something was answered, and every answer came from backend and saw
// the node address as the client's (masquerade).
func checkLoad(t *testing.T, what string, r loadResult, backend string) {
	t.Helper()
	logLoad(t, what, r)
	if r.Errors > 0 {
		t.Errorf("%s: %d of %d connections failed, the first %.1fs into the run: %s", what, r.Errors, r.Conns,
			r.FirstErrorAt, r.FirstError)
	}
	if r.Requests == 0 {
		t.Errorf("%s: nothing answered", what)
	}
	for ep := range r.Endpoints {
		if ep != backend {
			t.Errorf("%s: answers from %s, want %s only", what, ep, backend)
		}
	}
	for peer := range r.Peers {
		if peer != extNodeIP {
			t.Errorf("%s: the pod saw the client as %s, want the node address %s (masquerade)", what, peer, extNodeIP)
		}
	}
}

// checkTimeWait: the pod holds its connections' TIME_WAIT when it closed first (TIME_WAIT lasts
// 60 s, the test 20 s; at most one a masquerade port, as a new connection takes over a tuple the
// pod holds), and none when the client did, or the test did not test what it claims.
func checkTimeWait(t *testing.T, ctx context.Context, topo *topology.Topology, podCloses bool, answered int64) {
	t.Helper()
	out, err := topo.Run(ctx, topo.PodNS(localPod), "ss", "-Htan", "state", "time-wait")
	if err != nil {
		t.Error(err)
		return
	}
	n := int64(strings.Count(out, "\n"))
	t.Logf("the pod holds %d connections in TIME_WAIT", n)
	if want := min(answered, churnMasqPorts) / 2; podCloses && n < want {
		t.Errorf("the pod holds %d connections in TIME_WAIT after %d answered on %d masquerade ports, want at least %d: it closes first",
			n, answered, churnMasqPorts, want)
	}
	if !podCloses && n > answered/100 {
		t.Errorf("the pod holds %d connections in TIME_WAIT after %d answered, want next to none: the client closes first", n, answered)
	}
}

// checkNoDrops: the tc programs dropped nothing for want of a masquerade port, and (where the
// dataplane counts it) left no established connection evictable for want of room (ct_full).
func checkNoDrops(t *testing.T, ctx context.Context, topo *topology.Topology) map[string]float64 {
	t.Helper()
	evs := logTCEvents(t, ctx, topo)
	for _, ev := range []string{"drop_no_snat_port", "ct_full"} {
		if evs[ev] > 0 {
			t.Errorf("the tc programs counted %s=%g", ev, evs[ev])
		}
	}
	return evs
}
