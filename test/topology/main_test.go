package topology

import (
	"os"
	"testing"
)

// support is set by TestMain: the helper binaries, or why topologies cannot be
// built here.
var support *Support

func TestMain(m *testing.M) {
	support = PrepareTests("root, ip, nsenter and cgroup v2", nil)
	os.Exit(support.Run(m))
}

func requireTopology(t *testing.T) {
	t.Helper()
	support.Require(t)
}

// build builds a scenario and closes it when the test ends.
func build(t *testing.T, s Scenario) *Topology {
	t.Helper()
	return support.Build(t, s)
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
