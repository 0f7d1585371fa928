package restart

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/topology"
)

// badObjects: the working service of objects(), and next to it a service with
// more backends than the (deliberately small) backends map holds, one without
// ports and one whose cluster IP is no address.
func badObjects() flow.Objects {
	o := objects()
	var eps []flow.Endpoint
	for i := 1; i <= 20; i++ {
		eps = append(eps, flow.Endpoint{Addresses: []string{fmt.Sprintf("10.0.3.%d", i)}, Ready: ptr.To(true)})
	}
	c := flow.Case{
		Node: flow.Node{Name: nodeName, IPs: []string{"192.168.0.2"}},
		Services: []flow.Service{
			{Namespace: "default", Name: "big", ClusterIP: "172.30.0.20",
				Ports: []flow.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: 8080}}},
			{Namespace: "default", Name: "noports", ClusterIP: "172.30.0.21"},
			{Namespace: "default", Name: "badip", ClusterIP: "300.1.1.1",
				Ports: []flow.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: 8080}}},
		},
		EndpointSlices: []flow.EndpointSlice{{
			Namespace: "default", Service: "big", Name: "big-1",
			Ports: []flow.EndpointPort{{Name: "http", Protocol: "TCP", Port: 8080}}, Endpoints: eps,
		}},
	}
	bad := c.ToObjects()
	o.Services = append(o.Services, bad.Services...)
	o.EndpointSlices = append(o.EndpointSlices, bad.EndpointSlices...)
	return o
}

// TestBadInputLeavesOthersWorking: oversized and malformed services are refused
// with a message naming them, the agent still syncs (and stays healthy), and the
// good service works.
func TestBadInputLeavesOthersWorking(t *testing.T) {
	requirePrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	topo := buildTopology(t, scenario())
	ag := newAgents(t, topo, badObjects(), "--bpf-max-backends=16")
	ag.start(t, ctx) // fails unless the sync succeeded in spite of the refused service

	res, err := topo.Probe(ctx, topo.PodNS(clientPod), "tcp", svcAddr, topology.ProbeOptions{N: 16, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range res {
		if r.Result != "ok" {
			t.Errorf("the good service: %+v", r)
		}
		seen[r.Endpoint] = true
	}
	if !seen[backend1] || !seen[backend2] {
		t.Errorf("the good service reached %v, want both backends", seen)
	}

	log, err := os.ReadFile(ag.curLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"172.30.0.20:80/TCP", "full", "NoPorts", "default/noports", "InvalidClusterIP", "300.1.1.1"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the agent's log does not say %q:\n%s", want, ag.logTail())
		}
	}
	metrics, err := topo.Run(ctx, topo.NodeNS(), "curl", "-s", "--max-time", "2", "http://127.0.0.1:10249/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(metrics, "switchyard_frontends_not_programmed 1\n") {
		t.Errorf("switchyard_frontends_not_programmed is not 1")
	}
	health, err := topo.Run(ctx, topo.NodeNS(), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "http://127.0.0.1:10256/healthz")
	if err != nil || health != "200" {
		t.Errorf("healthz: %q %v", health, err)
	}
}
