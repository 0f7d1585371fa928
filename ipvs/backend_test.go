package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

var ctx = context.Background()

// mixed puts one service of every kind in c.
func mixed(c *cluster) {
	c.put(service("ns", "web", "172.30.0.1", withNodePort(30080)), "10.0.1.1/l", "10.0.2.1")
	c.put(service("ns", "sticky", "172.30.0.2", withAffinity(600)), "10.0.2.2")
	c.put(service("ns", "ext", "172.30.0.3", withExternalIPs("198.51.100.7", "192.168.0.2")), "10.0.2.3")
	c.put(service("ns", "lb", "172.30.0.4", withLB("203.0.113.10"), withSourceRanges("198.51.100.0/24"), withETPLocal(32000)), "10.0.2.4")
	c.put(service("ns", "empty", "172.30.0.5", withNodePort(30081)))
	c.put(service("ns", "here", "172.30.0.6", withITPLocal), "10.0.2.6")
	svc := service("ns", "dns", "fd00:96::a", withUDP)
	c.set("ns", "dns", svc, endpoints(svc, 53, "fd00:10::1/l"))
}

func TestFullSyncProgramsTheWantedConfig(t *testing.T) {
	k := newKernel()
	b := k.backend(t, testOptions())
	c := newCluster(modelConfig())
	mixed(c)
	if err := b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	assertKernel(t, k, c.st, testOptions())
	// The externalIP that is the node's own address is served, not put on the
	// device, and recorded: nothing else would tell it is Switchyard's.
	if !slices.Equal(k.records.Keys, []dataplane.FrontendKey{key("192.168.0.2:80/TCP")}) {
		t.Errorf("records: %v", k.records.Keys)
	}
	// A second full sync over what it wrote changes nothing in IPVS or on the device.
	k.ipvs.ResetCalls()
	k.links.ResetCalls()
	if err := b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	for _, call := range k.ipvs.Calls() {
		if !strings.HasPrefix(call, "Services") && !strings.HasPrefix(call, "Destinations") {
			t.Errorf("a full sync over a correct kernel wrote: %s", call)
		}
	}
	if calls := k.links.Calls(); !slices.Equal(calls, []string{"EnsureDummy " + DefaultDevice}) {
		t.Errorf("a full sync over a correct kernel: netlink calls %v", calls)
	}
}

// 100 services, one endpoint change: only that service's virtual service is
// touched, nothing is read back, and the restore is a few lines.
func TestPartialSyncTouchesOnlyTheChangedService(t *testing.T) {
	k := newKernel()
	b := k.backend(t, testOptions())
	c := newCluster(modelConfig())
	for i := range 100 {
		c.put(service("ns", fmt.Sprintf("svc-%d", i), fmt.Sprintf("172.30.0.%d", i+1)), fmt.Sprintf("10.1.%d.1", i), fmt.Sprintf("10.1.%d.2/l", i))
	}
	if err := b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	k.ipvs.ResetCalls()
	k.links.ResetCalls()
	restores, restores6 := len(k.rules[dataplane.IPv4].Calls()), len(k.rules[dataplane.IPv6].Calls())
	cs := c.put(service("ns", "svc-7", "172.30.0.8"), "10.1.7.1", "10.1.7.3/l")
	if err := b.Sync(ctx, c.st, cs); err != nil {
		t.Fatal(err)
	}
	changed := key("172.30.0.8:80/TCP").String()
	for _, call := range k.ipvs.Calls() {
		if !strings.Contains(call, changed) {
			t.Errorf("a partial sync of %s made %s", changed, call)
		}
	}
	if calls := k.links.Calls(); len(calls) != 0 {
		t.Errorf("netlink calls %v, want none", calls)
	}
	calls := k.rules[dataplane.IPv4].Calls()[restores:]
	if len(calls) != 1 || calls[0].Lines > 6 {
		t.Errorf("restores %+v, want one of a few lines (the hairpin rules)", calls)
	}
	if n := len(k.rules[dataplane.IPv6].Calls()) - restores6; n != 0 {
		t.Errorf("IPv6 restores in a sync of an IPv4 service: %d, want none", n)
	}
	assertKernel(t, k, c.st, testOptions())
	// Deleting a service removes its virtual service and address, nothing else.
	k.ipvs.ResetCalls()
	k.links.ResetCalls()
	cs = c.set("ns", "svc-9", nil, nil)
	if err := b.Sync(ctx, c.st, cs); err != nil {
		t.Fatal(err)
	}
	if calls := k.ipvs.Calls(); !slices.Equal(calls, []string{"DeleteService 172.30.0.10:80/TCP"}) {
		t.Errorf("deleting a service: %v", calls)
	}
	if calls := k.links.Calls(); !slices.Equal(calls, []string{"DelAddr swyd-ipvs0 172.30.0.10"}) {
		t.Errorf("deleting a service: netlink %v", calls)
	}
	assertKernel(t, k, c.st, testOptions())
}

// An address two frontends share stays on the device until the last one goes.
func TestSharedAddressStaysWhileUsed(t *testing.T) {
	k := newKernel()
	b := k.backend(t, testOptions())
	c := newCluster(modelConfig())
	c.put(service("ns", "a", "172.30.0.1", withLB("203.0.113.10")), "10.0.2.1")
	b80 := service("ns", "b", "172.30.0.2", withLB("203.0.113.10"))
	b80.Spec.Ports[0].Port = 81
	c.put(b80, "10.0.2.2")
	if err := b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, c.st, c.set("ns", "a", nil, nil)); err != nil {
		t.Fatal(err)
	}
	assertKernel(t, k, c.st, testOptions())
	if err := b.Sync(ctx, c.st, c.set("ns", "b", nil, nil)); err != nil {
		t.Fatal(err)
	}
	assertKernel(t, k, c.st, testOptions())
}

// A failed restore fails the sync; the next sync is full whatever it is given,
// reads the kernel back and repairs it.
func TestFailureForcesFullSync(t *testing.T) {
	k := newKernel()
	b := k.backend(t, testOptions())
	c := newCluster(modelConfig())
	mixed(c)
	if err := b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	k.rules[dataplane.IPv4].FailNext(1)
	cs := c.put(service("ns", "web", "172.30.0.1", withNodePort(30080)))
	if err := b.Sync(ctx, c.st, cs); !errors.Is(err, netfilter.ErrFakeInjected) {
		t.Fatalf("sync with a failing restore: %v", err)
	}
	// Meanwhile someone removes a virtual service.
	if err := k.ipvs.DeleteService(key("172.30.0.2:80/TCP")); err != nil {
		t.Fatal(err)
	}
	k.ipvs.ResetCalls()
	cs = c.put(service("ns", "new", "172.30.0.9"), "10.0.2.9")
	if err := b.Sync(ctx, c.st, cs); err != nil {
		t.Fatal(err)
	}
	if calls := k.ipvs.Calls(); len(calls) == 0 || calls[0] != "Services" {
		t.Errorf("the sync after a failure did not read the kernel back: %v", calls)
	}
	assertKernel(t, k, c.st, testOptions())

	// A device that cannot be made fails the sync before anything is written.
	k.links.FailNext(1)
	k.ipvs.ResetCalls()
	if err := b.Sync(ctx, c.st, nil); !errors.Is(err, ErrFakeLinks) {
		t.Fatalf("sync with a failing netlink: %v", err)
	}
	if calls := k.ipvs.Calls(); len(calls) != 0 {
		t.Errorf("IPVS calls after the device failed: %v", calls)
	}
	if err := b.Sync(ctx, c.st, c.put(service("ns", "new", "172.30.0.9"), "10.0.2.8")); err != nil {
		t.Fatal(err)
	}
	assertKernel(t, k, c.st, testOptions())
}

// A virtual service the kernel refuses is reported on its own (the runner tells
// its Service and stays healthy); everything else is programmed, and later
// syncs, partial ones too, try it again.
func TestFrontendFailureIsReportedAndRetried(t *testing.T) {
	k := newKernel()
	b := k.backend(t, testOptions())
	c := newCluster(modelConfig())
	mixed(c)
	bad := key("172.30.0.2:80/TCP")
	k.ipvs.FailKey(bad, errors.New("refused"))
	err := b.Sync(ctx, c.st, nil)
	var fe dataplane.FrontendErrors
	if !errors.As(err, &fe) || len(fe) != 1 || fe[bad] == nil {
		t.Fatalf("sync with one failing service: %v", err)
	}
	if _, ok := err.(dataplane.FrontendErrors); !ok {
		t.Errorf("the error is %T, want FrontendErrors itself (the runner checks the type)", err)
	}
	k.ipvs.FailKey(bad, nil)
	if err := b.Sync(ctx, c.st, c.put(service("ns", "new", "172.30.0.9"), "10.0.2.9")); err != nil {
		t.Fatal(err)
	}
	assertKernel(t, k, c.st, testOptions())
}

// Cleanup removes Switchyard's virtual services, the device, the rules and the
// jumps; another process's cleanup too (switchyard cleanup after a crash).
func TestCleanup(t *testing.T) {
	for _, fresh := range []bool{false, true} {
		t.Run(fmt.Sprintf("fresh=%v", fresh), func(t *testing.T) {
			k := newKernel()
			c := newCluster(modelConfig())
			mixed(c)
			b := k.backend(t, testOptions())
			if err := b.Sync(ctx, c.st, nil); err != nil {
				t.Fatal(err)
			}
			if err := k.ipvs.AddService(VirtualService{FrontendKey: key("192.0.2.1:80/TCP"), Scheduler: "rr"}); err != nil {
				t.Fatal(err)
			}
			if fresh {
				b = k.backend(t, testOptions())
			}
			if err := b.Cleanup(ctx); err != nil {
				t.Fatal(err)
			}
			if got := k.ipvs.Dump(); !slices.Equal(got, []string{"192.0.2.1:80/TCP rr"}) {
				t.Errorf("IPVS after cleanup: %v", got)
			}
			if _, _, ok := k.links.Device(DefaultDevice); ok {
				t.Errorf("the device is still there")
			}
			for _, f := range []dataplane.Family{dataplane.IPv4, dataplane.IPv6} {
				if s := k.ourChains(f); s != "" {
					t.Errorf("%s rules after cleanup:\n%s", f, s)
				}
			}
			if len(k.records.Keys) != 0 {
				t.Errorf("records after cleanup: %v", k.records.Keys)
			}
			// Nothing left: a second cleanup is a no-op.
			if err := b.Cleanup(ctx); err != nil {
				t.Errorf("second cleanup: %v", err)
			}
		})
	}
}

func TestSysctls(t *testing.T) {
	k := newKernel()
	names := []string{"net/ipv4/vs/conntrack", "net/ipv4/vs/expire_nodest_conn", "net/ipv4/vs/expire_quiescent_template", "net/ipv4/ip_forward"}
	initial := map[string]string{}
	for _, n := range names {
		initial[n] = "0"
	}
	sc := netfilter.NewFakeSysctl(initial)
	cfg := Config{Options: testOptions(), IPVS: k.ipvs, Links: k.links, Sysctl: sc}
	b, err := NewBackend(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, newCluster(modelConfig()).st, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if v, _ := sc.Get(n); v != "1" {
			t.Errorf("%s = %s, want 1", n, v)
		}
	}
	// A kernel without IPVS has no net.ipv4.vs: the sync says so.
	cfg.Sysctl = netfilter.NewFakeSysctl(map[string]string{"net/ipv4/ip_forward": "1"})
	b, _ = NewBackend(cfg)
	if err := b.Sync(ctx, newCluster(modelConfig()).st, nil); err == nil || !strings.Contains(err.Error(), "net/ipv4/vs/conntrack") {
		t.Errorf("sync without net.ipv4.vs: %v", err)
	}
}

// UDP flows are forgotten where kube-proxy forgets them: a service that gets
// its first endpoint, an endpoint that goes.
func TestStaleUDPConntrack(t *testing.T) {
	k := newKernel()
	ct := &netfilter.FakeConntrack{}
	cfg := Config{Options: testOptions(), IPVS: k.ipvs, Links: k.links, Conntrack: ct}
	b, err := NewBackend(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(modelConfig())
	dns := service("ns", "dns", "172.30.0.10", withUDP)
	c.put(dns)
	if err := b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, c.st, c.put(dns, "10.0.2.1", "10.0.2.2")); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, c.st, c.put(dns, "10.0.2.2")); err != nil {
		t.Fatal(err)
	}
	svcs, eps, _ := ct.Cleared()
	ap := netip.MustParseAddrPort
	if !slices.Equal(svcs, []netip.AddrPort{ap("172.30.0.10:80")}) ||
		!slices.Equal(eps, []netfilter.StaleEndpoint{{Service: ap("172.30.0.10:80"), Endpoint: ap("10.0.2.1:8080")}}) {
		t.Errorf("cleared services %v, endpoints %v", svcs, eps)
	}
}

func TestNewBackendChecksItsConfig(t *testing.T) {
	k := newKernel()
	for name, cfg := range map[string]Config{
		"scheduler": {IPVS: k.ipvs, Links: k.links, Options: Options{Scheduler: "fastest"}},
		"device":    {IPVS: k.ipvs, Links: k.links, Device: "a-very-long-device-name"},
		"handles":   {Links: k.links},
		"restorer":  {IPVS: k.ipvs, Links: k.links, Families: []dataplane.Family{dataplane.IPv4}},
	} {
		if _, err := NewBackend(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	b, err := NewBackend(Config{IPVS: k.ipvs, Links: k.links, Options: Options{Scheduler: "sh"}})
	if err != nil || b.Name() != "ipvs" {
		t.Errorf("NewBackend with sh: %v", err)
	}
}

// At 10,000 services one endpoint change is a handful of kernel writes and a
// restore of a few lines.
func TestSyncAt10kServicesWritesOnlyWhatChanged(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	k := newKernel()
	b := k.backend(t, testOptions())
	c := newCluster(modelConfig())
	eps := func(i, first int) []string {
		var out []string
		for e := first; e < first+10; e++ {
			out = append(out, fmt.Sprintf("10.%d.%d.%d", 1+i/60000, i/250%240, e*20+1+i%20))
		}
		return out
	}
	ip := func(i int) string { return fmt.Sprintf("172.30.%d.%d", i/250, i%250+1) }
	for i := range 10000 {
		c.put(service("ns", fmt.Sprintf("svc-%d", i), ip(i)), eps(i, 0)...)
	}
	start := time.Now()
	if err := b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("full sync of 10,000 services: %v, %d restore lines", time.Since(start), b.LastLines[dataplane.IPv4])
	k.ipvs.ResetCalls()
	cs := c.put(service("ns", "svc-4242", ip(4242)), eps(4242, 1)...) // one endpoint out, one in
	start = time.Now()
	if err := b.Sync(ctx, c.st, cs); err != nil {
		t.Fatal(err)
	}
	t.Logf("partial sync: %v, IPVS calls %v, %d restore lines", time.Since(start), k.ipvs.Calls(), b.LastLines[dataplane.IPv4])
	if n := len(k.ipvs.Calls()); n > 4 {
		t.Errorf("%d IPVS calls for one endpoint change", n)
	}
	if n := b.LastLines[dataplane.IPv4]; n > 0 {
		t.Errorf("%d restore lines for a change no rule depends on (no local endpoint)", n)
	}
}

// cancelAtAdd is the fake IPVS with a shutdown in the middle of a sync: it ends
// the sync's context right after its nth AddService.
type cancelAtAdd struct {
	*FakeIPVS
	n      int
	cancel context.CancelFunc
}

func (c *cancelAtAdd) AddService(s VirtualService) error {
	err := c.FakeIPVS.AddService(s)
	if c.n--; c.n == 0 {
		c.cancel()
	}
	return err
}

// A sync whose context ends stops between two frontends with the context's
// error: the frontends it reached are complete (the service and every
// destination), the others untouched, no rule written; the next sync does the rest.
func TestSyncStopsBetweenFrontends(t *testing.T) {
	k := newKernel()
	c := newCluster(modelConfig())
	for i := range 10 {
		c.put(service("ns", fmt.Sprintf("svc-%d", i), fmt.Sprintf("172.30.0.%d", i+1)), fmt.Sprintf("10.1.%d.1", i), fmt.Sprintf("10.1.%d.2/l", i))
	}
	b := k.backend(t, testOptions())
	stop, cancel := context.WithCancel(t.Context())
	defer cancel()
	b.ipvs.ipvs = &cancelAtAdd{FakeIPVS: k.ipvs, n: 3, cancel: cancel}
	if err := b.Sync(stop, c.st, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync = %v, want an error wrapping context.Canceled", err)
	}
	dump := k.ipvs.Dump()
	if len(dump) != 3 {
		t.Errorf("IPVS holds %d services after a sync stopped at the 3rd: %q", len(dump), dump)
	}
	for _, line := range dump {
		if strings.Count(line, "->") != 2 {
			t.Errorf("a frontend half written: %s", line)
		}
	}
	for f, r := range k.rules {
		if calls := r.Calls(); len(calls) != 0 {
			t.Errorf("%s: %d restores after a sync stopped among the virtual services", f, len(calls))
		}
	}
	b.ipvs.ipvs = k.ipvs
	if err := b.Sync(t.Context(), c.st, nil); err != nil {
		t.Fatal(err)
	}
	assertKernel(t, k, c.st, testOptions())
}

// A sync stopped in its rules' restore leaves the rules as they were and what
// is gone in place (the rules may still lead there); the next sync does the rest.
func TestSyncStoppedInTheRestoreDeletesNothing(t *testing.T) {
	k := newKernel()
	c := newCluster(modelConfig())
	c.put(service("ns", "web", "172.30.0.1", withNodePort(30080)), "10.0.1.1/l", "10.0.2.1")
	c.put(service("ns", "old", "172.30.0.2", withNodePort(30081)), "10.0.1.2/l")
	b := k.backend(t, testOptions())
	if err := b.Sync(t.Context(), c.st, nil); err != nil {
		t.Fatal(err)
	}
	before, ipvsBefore := k.ourChains(dataplane.IPv4), k.ipvs.Dump()
	held := make(chan struct{})
	k.rules[dataplane.IPv4].OnRestore(func(ctx context.Context) {
		close(held)
		<-ctx.Done()
	})
	cs := c.set("ns", "old", nil, nil)
	stop, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Sync(stop, c.st, cs) }()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("no restore started")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Sync = %v, want an error wrapping context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sync did not return after its context was canceled")
	}
	if after := k.ourChains(dataplane.IPv4); after != before {
		t.Errorf("a stopped restore changed the rules:\n%s\nwas\n%s", after, before)
	}
	if got := k.ipvs.Dump(); !slices.Equal(got, ipvsBefore) {
		t.Errorf("a sync stopped before its deletions changed IPVS:\n%q\nwas\n%q", got, ipvsBefore)
	}
	k.rules[dataplane.IPv4].OnRestore(nil)
	if err := b.Sync(t.Context(), c.st, nil); err != nil {
		t.Fatal(err)
	}
	assertKernel(t, k, c.st, testOptions())
}
