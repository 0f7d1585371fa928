package restart

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/test/flow"
)

// withUDPService adds a UDP service 172.30.0.30:53 with the given endpoints (port 5353).
func withUDPService(o flow.Objects, endpoints ...string) flow.Objects {
	var eps []flow.Endpoint
	for _, ip := range endpoints {
		eps = append(eps, flow.Endpoint{Addresses: []string{ip}, Ready: ptr.To(true), NodeName: ptr.To(nodeName)})
	}
	c := flow.Case{
		Node: flow.Node{Name: nodeName, IPs: []string{"192.168.0.2"}},
		Services: []flow.Service{{Namespace: "default", Name: "dns", ClusterIP: "172.30.0.30",
			Ports: []flow.ServicePort{{Name: "dns", Protocol: "UDP", Port: 53, TargetPort: 5353}}}},
		EndpointSlices: []flow.EndpointSlice{{Namespace: "default", Service: "dns", Name: "dns-1",
			Ports: []flow.EndpointPort{{Name: "dns", Protocol: "UDP", Port: 5353}}, Endpoints: eps}},
	}
	u := c.ToObjects()
	o.Services = append(o.Services, u.Services...)
	o.EndpointSlices = append(o.EndpointSlices, u.EndpointSlices...)
	return o
}

// TestUDPSocketsOfRemovedBackendsAreDestroyed: a client's UDP socket connected
// through a service keeps sending to the backend chosen at connect(); when the
// service's backends go away, the agent destroys it, so the client notices.
func TestUDPSocketsOfRemovedBackendsAreDestroyed(t *testing.T) {
	requirePrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	topo := buildTopology(t, scenario())
	ag := newAgents(t, topo, withUDPService(objects(), "10.0.1.1", "10.0.1.2"))
	ag.start(t, ctx)

	held, err := topo.HoldUDP(ctx, topo.PodNS(clientPod), "172.30.0.30:53")
	if err != nil {
		t.Fatal(err)
	}
	// The service loses every endpoint: whichever the socket got is gone.
	if err := withUDPService(objects()).WriteManifests(ag.manifests); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-held:
		if !strings.Contains(r.Error, "connection abort") {
			t.Errorf("the client's socket: %+v, want it aborted", r)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("the socket connected to a removed backend was not destroyed\n%s", ag.logTail())
	}
}
