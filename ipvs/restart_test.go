package ipvs

import (
	"net/netip"
	"testing"

	"github.com/switchyard/switchyard/dataplane"
)

// A restarted agent finds the kernel changed behind its back and services
// deleted while it was down: its first (full) sync repairs everything, deletes
// what it made and no longer wants (recognised by the device's addresses, the
// NodePort range and the records), and leaves others' virtual services alone.
func TestRestartRepairsDrift(t *testing.T) {
	k := newKernel()
	c := newCluster(modelConfig())
	mixed(c)
	if err := k.backend(t, testOptions()).Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	// The agent is down. Someone changes the kernel...
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	web := key("172.30.0.1:80/TCP")
	must(k.ipvs.DeleteDestination(web, netip.MustParseAddrPort("10.0.2.1:8080")))
	must(k.ipvs.UpdateDestination(web, Destination{Addr: netip.MustParseAddr("10.0.1.1"), Port: 8080, Weight: 7}))
	must(k.ipvs.UpdateService(VirtualService{FrontendKey: key("172.30.0.2:80/TCP"), Scheduler: "wlc"}))
	must(k.links.DelAddr(DefaultDevice, netip.MustParseAddr("172.30.0.4")))
	must(k.links.AddAddr(DefaultDevice, netip.MustParseAddr("172.30.9.9")))
	must(k.ipvs.AddService(VirtualService{FrontendKey: key("172.30.9.9:80/TCP"), Scheduler: "rr"}))
	foreign := []VirtualService{
		{FrontendKey: key("192.0.2.1:80/TCP"), Scheduler: "wrr"},    // an address that is not Switchyard's
		{FrontendKey: key("192.168.0.2:22/TCP"), Scheduler: "rr"},   // the node's address, not a NodePort
		{FrontendKey: key("192.168.0.2:8443/TCP"), Scheduler: "rr"}, // idem
	}
	for _, vs := range foreign {
		must(k.ipvs.AddService(vs))
	}
	r4 := k.rules[dataplane.IPv4]
	must(r4.Restore(ctx, []byte("*filter\n-D INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes ipvs access filter\" -j SWYDIPVS-FILTER\n"+
		":SWYDIPVS-FW-STALE - [0:0]\n-A SWYDIPVS-FW-STALE -j DROP\n-A SWYDIPVS-FILTER -d 10.9.9.9 -j SWYDIPVS-FW-STALE\nCOMMIT\n")))
	// ...and services go: a NodePort, the externalIP on the node's address.
	c.set("ns", "web", service("ns", "web", "172.30.0.1"), endpoints(service("ns", "web", "172.30.0.1"), 8080, "10.0.1.1/l", "10.0.2.1"))
	c.set("ns", "ext", nil, nil)

	b := k.backend(t, testOptions()) // the new process
	if err := b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	assertKernel(t, k, c.st, testOptions(), "192.0.2.1:80/TCP wrr", "192.168.0.2:22/TCP rr", "192.168.0.2:8443/TCP rr")
	if len(k.records.Keys) != 0 {
		t.Errorf("records after the recorded service went: %v", k.records.Keys)
	}
}
