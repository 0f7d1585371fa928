package topology

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// Set by TestMain: the helper binaries, or why topologies cannot be built here.
var (
	echoBin, probeBin string
	unsupported       error
	buildErr          error
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	unsupported = Prerequisites()
	if unsupported == nil {
		dir, err := os.MkdirTemp("", "topology-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		echoBin, probeBin, buildErr = BuildBinaries(ctx, dir)
		// Leftovers of killed runs only: other packages' tests may be running now.
		if removed, err := Cleanup(false); err != nil || len(removed) > 0 {
			fmt.Fprintf(os.Stderr, "topology: removed leftovers %v (error: %v)\n", removed, err)
		}
		CloseOnSignal()
	}
	return m.Run()
}

// requireTopology skips (fails on CI) when topologies cannot be built here.
func requireTopology(t *testing.T) {
	t.Helper()
	if unsupported != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("topology tests need root, ip, nsenter and cgroup v2: %v", unsupported)
		}
		t.Skipf("topology tests need root, ip, nsenter and cgroup v2: %v", unsupported)
	}
	if buildErr != nil {
		t.Fatalf("building the helper binaries: %v", buildErr)
	}
}

// build builds a scenario and closes it when the test ends.
func build(t *testing.T, s Scenario) *Topology {
	t.Helper()
	requireTopology(t)
	s.EchoBin, s.ProbeBin = echoBin, probeBin
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	topo, err := Build(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("topology %s built in %v", topo.Prefix(), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return topo
}

var testPorts = []Port{{"TCP", 80}, {"UDP", 53}}

// standardScenario is the brief's topology: a node with two local pods, a remote node with one pod,
// and two external clients.
func standardScenario(rpFilter int) Scenario {
	return Scenario{
		Node:       Node{Name: "node-a", IPs: []string{"192.168.0.2", "192.168.1.2", "2001:db8::1"}},
		RemoteNode: Node{Name: "node-b", IPs: []string{"192.168.0.3", "2001:db8::2"}},
		Pods: []Pod{
			{Name: "a1", IP: "10.0.1.1", IPv6: "fd00:1::1", Local: true, Ports: testPorts},
			{Name: "a2", IP: "10.0.1.2", Local: true, Ports: testPorts},
			{Name: "b1", IP: "10.0.2.1", IPv6: "fd00:2::1", Ports: testPorts},
		},
		External: []Client{{IP: "203.0.113.10"}, {IP: "198.51.100.20"}, {IP: "2001:db8:ff::10"}},
		RPFilter: rpFilter,
	}
}
