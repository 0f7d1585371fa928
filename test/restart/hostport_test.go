package restart

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/topology"
)

// The node-port scenario: the churn scenario's node and pod, the pod serving the greeting (it
// writes a line and closes first, so it holds the tuple in TIME_WAIT) and UDP.
func hostPortScenario() topology.Scenario {
	return onePodScenario(topology.Port{Protocol: "TCP", Port: greetPort}, topology.Port{Protocol: "UDP", Port: udpPort})
}

func hostPortObjects() flow.Objects {
	return nodePortObjects("hostport", "hostport", "172.30.0.51", []flow.ServicePort{
		{Name: "greet", Protocol: "TCP", Port: 80, TargetPort: greetPort, NodePort: greetNP},
		{Name: "udp", Protocol: "UDP", Port: 53, TargetPort: udpPort, NodePort: udpNP},
	}, endpoint(localIP, nodeName))
}

// TestNodeConnectionOnAMasqueradedPort: masquerade ports come from the node's ephemeral range too,
// so a connection of the node's own can get (or bind) a port that a masqueraded flow holds towards
// the same pod. The kernel only checks its own sockets; the pod's answers would be taken for the
// masqueraded flow's and sent outside. As conntrack does, the node's connection must be moved to
// another port on the wire and get its answers, and the masqueraded flow must keep its port. For
// TCP the outside connection is over, but the pod closed first and holds its tuple in TIME_WAIT;
// for UDP the outside flow is alive and is used again afterwards, from the same client port.
func TestNodeConnectionOnAMasqueradedPort(t *testing.T) {
	requirePrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel) // not deferred: see TestKill9UnderLoad
	topo := buildTopology(t, hostPortScenario())
	newAgents(t, topo, hostPortObjects()).start(t, ctx)

	for _, c := range []struct{ proto, frontend, backend string }{
		{"tcp", greetFrontend, fmt.Sprintf("%s:%d", localIP, greetPort)},
		{"udp", udpFrontend, udpBackend},
	} {
		out := probeOnce(t, ctx, topo, topo.ExternalNS(extClient), c.proto, c.frontend, "")
		held := mustAddrPort(t, out.Peer)
		if held.Addr().String() != extNodeIP {
			t.Fatalf("%s from outside: the pod saw %s, want the node address %s (masqueraded)", c.proto, out.Peer, extNodeIP)
		}
		// The node, from the very port the pod saw, straight to the pod.
		in := probeOnce(t, ctx, topo, topo.NodeNS(), c.proto, c.backend, held.String())
		if in.Endpoint != c.backend {
			t.Errorf("%s from the node on %s: answered by %s, want %s", c.proto, held, in.Endpoint, c.backend)
		}
		if in.Local != held.String() || in.Peer == held.String() {
			t.Errorf("%s from the node: its socket is %s and the pod saw %s; want the socket on %s and the pod "+
				"seeing another port (the masqueraded flow holds that one)", c.proto, in.Local, in.Peer, held)
		}
		if c.proto == "udp" {
			again := probeOnce(t, ctx, topo, topo.ExternalNS(extClient), c.proto, c.frontend, out.Local)
			if again.Peer != out.Peer {
				t.Errorf("udp from outside again, from %s: the pod saw %s, want %s (the flow's port, kept)",
					out.Local, again.Peer, out.Peer)
			}
		}
	}
	evs := logTCEvents(t, ctx, topo)
	if evs["host_port"] < 2 {
		t.Errorf("host_port counted %g connections of the node's own moved to another port, want 2", evs["host_port"])
	}
	checkNoDrops(t, ctx, topo)
}

// probeOnce opens one connection with the probe in ns (from src, IP:PORT, when not empty): it must
// be answered.
func probeOnce(t *testing.T, ctx context.Context, topo *topology.Topology, ns, proto, dst, src string) topology.ProbeResult {
	t.Helper()
	rs, err := topo.Probe(ctx, ns, proto, dst, topology.ProbeOptions{Src: src, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Result != "ok" {
		t.Fatalf("%s %s from %s (%s): %+v, want one answer", proto, dst, ns, src, rs)
	}
	return rs[0]
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return ap
}
