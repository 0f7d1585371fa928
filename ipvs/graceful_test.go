package ipvs

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/dataplane"
)

func TestGracefulTermination(t *testing.T) {
	k := newKernel()
	b := k.backend(t, testOptions())
	c := newCluster(modelConfig())
	web := service("ns", "web", "172.30.0.1")
	dns := service("ns", "dns", "172.30.0.2", withUDP)
	c.put(web, "10.0.2.1", "10.0.2.2")
	c.put(dns, "10.0.2.1", "10.0.2.2")
	sync := func(cs *dataplane.ChangeSet) {
		t.Helper()
		if err := b.Sync(ctx, c.st, cs); err != nil {
			t.Fatal(err)
		}
	}
	sync(nil)
	webKey, dnsKey := key("172.30.0.1:80/TCP"), key("172.30.0.2:80/UDP")
	ep2 := netip.MustParseAddrPort("10.0.2.2:8080")
	for _, k2 := range []dataplane.FrontendKey{webKey, dnsKey} {
		if err := k.ipvs.SetConns(k2, ep2, 2, 1); err != nil {
			t.Fatal(err)
		}
	}
	sync(c.put(web, "10.0.2.1"))
	sync(c.put(dns, "10.0.2.1"))
	dump := strings.Join(k.ipvs.Dump(), "\n")
	// TCP: quiesced while it has connections; UDP: gone at once.
	for _, want := range []string{
		"172.30.0.1:80/TCP rr -> 10.0.2.1:8080 w1 -> 10.0.2.2:8080 w0 (2+1 conns)",
		"172.30.0.2:80/UDP rr -> 10.0.2.1:8080 w1",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("IPVS holds\n%s\nwant %q", dump, want)
		}
	}
	// Another service's change drains again; the connections are still there.
	sync(c.put(service("ns", "other", "172.30.0.3"), "10.0.2.9"))
	if !strings.Contains(strings.Join(k.ipvs.Dump(), "\n"), "10.0.2.2:8080 w0 (2+1 conns)") {
		t.Errorf("a draining destination with connections went: %v", k.ipvs.Dump())
	}
	// It comes back before it drained: its weight returns, its connections stay.
	sync(c.put(web, "10.0.2.1", "10.0.2.2"))
	if !strings.Contains(strings.Join(k.ipvs.Dump(), "\n"), "-> 10.0.2.2:8080 w1 (2+1 conns)") {
		t.Errorf("a destination that came back: %v", k.ipvs.Dump())
	}
	// It goes for good; all endpoints go, so new connections are refused, while
	// the old ones drain.
	sync(c.put(web))
	if !strings.Contains(strings.Join(k.ipvs.Dump(), "\n"), "172.30.0.1:80/TCP rr -> 10.0.2.1:8080 w0 -> 10.0.2.2:8080 w0 (2+1 conns)") {
		// 10.0.2.1 had no connections, but stays until the next drain pass reads
		// the kernel: it is the same sync, so it is gone already.
		if !strings.Contains(strings.Join(k.ipvs.Dump(), "\n"), "172.30.0.1:80/TCP rr -> 10.0.2.2:8080 w0 (2+1 conns)") {
			t.Errorf("after the last endpoint went: %v", k.ipvs.Dump())
		}
	}
	if !strings.Contains(k.ourChains(dataplane.IPv4), `"ns/web:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.1 --dport 80 -j REJECT`) {
		t.Errorf("no REJECT for a service without endpoints:\n%s", k.ourChains(dataplane.IPv4))
	}
	// The connections end; the next sync (here the periodic full one) deletes it.
	if err := k.ipvs.SetConns(webKey, ep2, 0, 0); err != nil {
		t.Fatal(err)
	}
	sync(nil)
	assertKernel(t, k, c.st, testOptions())
}

// A deleted service's virtual service goes at once, draining or not (as in
// kube-proxy: nothing routes to it any more).
func TestDeletedServiceGoesWhileDraining(t *testing.T) {
	k := newKernel()
	b := k.backend(t, testOptions())
	c := newCluster(modelConfig())
	web := service("ns", "web", "172.30.0.1")
	c.put(web, "10.0.2.1", "10.0.2.2")
	if err := b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	if err := k.ipvs.SetConns(key("172.30.0.1:80/TCP"), netip.MustParseAddrPort("10.0.2.2:8080"), 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, c.st, c.put(web, "10.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if d := k.ipvs.Dump(); !slices.Equal(d, []string{"172.30.0.1:80/TCP rr -> 10.0.2.1:8080 w1 -> 10.0.2.2:8080 w0 (1+0 conns)"}) {
		t.Fatalf("IPVS holds %v, want 10.0.2.2 draining", d)
	}
	if err := b.Sync(ctx, c.st, c.set("ns", "web", nil, nil)); err != nil {
		t.Fatal(err)
	}
	assertKernel(t, k, c.st, testOptions())
}
