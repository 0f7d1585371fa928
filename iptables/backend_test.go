package iptables

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// cluster is a model fed service by service, as the tracker would.
type cluster struct {
	sc scenario
	st *dataplane.State
}

func newCluster(sc scenario) *cluster {
	st := dataplane.NewState()
	st.Node = sc.node()
	return &cluster{sc: sc, st: st}
}

// set puts a service with its slice (nil slice: no endpoints; nil service: gone).
func (c *cluster) set(ns, name string, svc *v1.Service, sl *discovery.EndpointSlice) *dataplane.ChangeSet {
	var ss *dataplane.ServiceState
	if svc != nil {
		var sls []*discovery.EndpointSlice
		if sl != nil {
			sls = append(sls, sl)
		}
		ss = dataplane.ComputeService(svc, sls, c.st.Node, c.sc.modelConfig())
	}
	return c.st.Apply(map[dataplane.ServiceName]*dataplane.ServiceState{{Namespace: ns, Name: name}: ss})
}

func numberedService(i int, udp bool, eps ...string) (*v1.Service, *discovery.EndpointSlice) {
	ip := fmt.Sprintf("172.30.%d.%d", i/250, i%250+1)
	svc := service("ns", fmt.Sprintf("svc-%d", i), ip)
	if udp {
		svc.Spec.Ports[0].Protocol = v1.ProtocolUDP
		return svc, endpoints(svc, 53, eps, "p80:UDP:53")
	}
	return svc, endpoints(svc, 8080, eps)
}

// numberedCluster holds services 0 to n-1 (TCP), each with the first eps of its tenEndpoints.
func numberedCluster(sc scenario, n, eps int) *cluster {
	c := newCluster(sc)
	for i := range n {
		svc, sl := numberedService(i, false, tenEndpoints(i)[:eps]...)
		c.set("ns", svc.Name, svc, sl)
	}
	return c
}

func tenEndpoints(i int) []string {
	var out []string
	for e := range 10 {
		out = append(out, fmt.Sprintf("10.%d.%d.%d", 1+i/60000, i/250%240, e*25+1+i%25))
	}
	return out
}

type fakeKernel struct {
	r   *netfilter.FakeRestorer
	ct  *netfilter.FakeConntrack
	b   *Backend
	reg *prometheus.Registry
}

func newFakeKernel(t testing.TB, sc scenario) *fakeKernel {
	t.Helper()
	r := netfilter.NewFakeRestorer()
	k := &fakeKernel{r: r, ct: &netfilter.FakeConntrack{}, reg: prometheus.NewRegistry()}
	b, err := NewBackend(BackendConfig{
		Model: sc.modelConfig(), Families: []dataplane.Family{dataplane.IPv4},
		Restorers: map[dataplane.Family]netfilter.Restorer{dataplane.IPv4: r},
		Jumpers:   map[dataplane.Family]netfilter.Jumper{dataplane.IPv4: netfilter.FakeJumper{R: r}},
		Conntrack: k.ct, Sysctl: netfilter.NewFakeSysctl(map[string]string{netfilter.SysctlRouteLocalnet: "0"}), MasqueradeBit: 14,
		Metrics: k.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	k.b = b
	return k
}

// ruleset is what a fake kernel holds, each chain's rules sorted: the set
// chains' order differs between partial and full syncs by design.
func (k *fakeKernel) ruleset() map[string][]string {
	out := map[string][]string{}
	for _, t := range []string{"nat", "filter"} {
		for c, rules := range k.r.Chains(t) {
			out[t+" "+c] = slices.Sorted(slices.Values(rules))
		}
	}
	return out
}

// sameAsFresh checks that k holds what a fresh backend's full sync of st writes.
func sameAsFresh(t *testing.T, k *fakeKernel, sc scenario, st *dataplane.State) {
	t.Helper()
	fresh := newFakeKernel(t, sc)
	if err := fresh.b.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	got, want := k.ruleset(), fresh.ruleset()
	for _, c := range slices.Sorted(maps.Keys(want)) {
		if !slices.Equal(got[c], want[c]) {
			t.Errorf("chain %s:\n got %q\nwant %q", c, got[c], want[c])
		}
	}
	for c := range got {
		if _, ok := want[c]; !ok {
			t.Errorf("chain %s should be gone: %q", c, got[c])
		}
	}
}

// At 10,000 services a change rewrites only what changed: the restore input of
// an endpoint change, a new service and a removed one is a few lines, and the
// result is what a full sync would write.
func TestSyncAt10kServicesWritesOnlyWhatChanged(t *testing.T) {
	const n = 10000
	sc := scenario{}
	c := numberedCluster(sc, n, 10)
	k := newFakeKernel(t, sc)
	ctx := context.Background()
	if err := k.b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	full := k.b.LastLines[dataplane.IPv4]
	if full < n*10 {
		t.Fatalf("the full sync wrote %d lines for %d services x 10 endpoints", full, n)
	}
	steps := []struct {
		what string
		do   func() *dataplane.ChangeSet
	}{
		{"one endpoint replaced", func() *dataplane.ChangeSet {
			svc, sl := numberedService(7, false, append(tenEndpoints(7)[1:], "10.200.0.1")...)
			return c.set("ns", svc.Name, svc, sl)
		}},
		{"a service added", func() *dataplane.ChangeSet {
			svc, sl := numberedService(n, false, tenEndpoints(n)...)
			return c.set("ns", svc.Name, svc, sl)
		}},
		{"a service removed", func() *dataplane.ChangeSet { return c.set("ns", "svc-9", nil, nil) }},
		{"a service's endpoints all gone", func() *dataplane.ChangeSet {
			svc, _ := numberedService(11, false)
			return c.set("ns", svc.Name, svc, nil)
		}},
	}
	for _, s := range steps {
		if err := k.b.Sync(ctx, c.st, s.do()); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		if got := k.b.LastLines[dataplane.IPv4]; got > 60 {
			t.Errorf("%s: the restore input has %d lines (the full sync %d)", s.what, got, full)
		}
		t.Logf("%s: %d lines (full sync: %d)", s.what, k.b.LastLines[dataplane.IPv4], full)
	}
	sameAsFresh(t, k, sc, c.st)
}

// A failing iptables-restore leaves the rules as they were; the next sync is
// full and repairs everything.
func TestFailedRestoreKeepsRulesAndNextSyncRepairs(t *testing.T) {
	sc := scenario{}
	c := numberedCluster(sc, 20, 3)
	k := newFakeKernel(t, sc)
	ctx := context.Background()
	if err := k.b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	before := k.ruleset()
	svc, sl := numberedService(3, false, "10.9.9.9")
	cs := c.set("ns", svc.Name, svc, sl)
	k.r.FailNext(1)
	err := k.b.Sync(ctx, c.st, cs)
	if !errors.Is(err, netfilter.ErrFakeInjected) {
		t.Fatalf("sync with a failing restore: %v", err)
	}
	if after := k.ruleset(); !maps.EqualFunc(before, after, slices.Equal) {
		t.Error("a failed restore changed the rules")
	}
	want := `
# HELP kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total Cumulative proxy iptables partial restore failures
# TYPE kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total counter
kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family="IPv4"} 1
# HELP kubeproxy_sync_proxy_rules_iptables_restore_failures_total Cumulative proxy iptables restore failures
# TYPE kubeproxy_sync_proxy_rules_iptables_restore_failures_total counter
kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"} 1
`
	if err := testutil.GatherAndCompare(k.reg, strings.NewReader(want),
		"kubeproxy_sync_proxy_rules_iptables_restore_failures_total", "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total"); err != nil {
		t.Error(err)
	}
	// The runner retries with the next change (or none): the backend makes it full.
	svc, sl = numberedService(4, false, "10.9.9.8")
	cs = c.set("ns", svc.Name, svc, sl)
	if err := k.b.Sync(ctx, c.st, cs); err != nil {
		t.Fatal(err)
	}
	if got := k.b.LastLines[dataplane.IPv4]; got < 100 {
		t.Errorf("the sync after a failure wrote %d lines; want a full sync", got)
	}
	sameAsFresh(t, k, sc, c.st)
}

// Full syncs put back a deleted jump; the hourly rewrite removes chains it does
// not render (a crash left them, or someone added them).
func TestFullSyncRepairsDrift(t *testing.T) {
	sc := scenario{}
	c := newCluster(sc)
	svc, sl := numberedService(1, false, "10.0.0.1")
	c.set("ns", svc.Name, svc, sl)
	k := newFakeKernel(t, sc)
	ctx := context.Background()
	if err := k.b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	jump := BaseJumps(DefaultConfig(dataplane.IPv4))[0]
	drift := "*nat\n:SWYD-SVC-LEFTOVER - [0:0]\n-A SWYD-SVC-LEFTOVER -j RETURN\nCOMMIT\n" +
		"*" + jump.Table + "\n-D" + strings.TrimPrefix(jumpRule(jump), "-A") + "\nCOMMIT\n"
	if err := k.r.Restore(ctx, []byte(drift)); err != nil {
		t.Fatal(err)
	}
	// Within the hour a full sync writes only what differs from what it wrote
	// (nothing here) and puts the jump back; the hourly rewrite removes strangers.
	if err := k.b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	if n := k.b.LastLines[dataplane.IPv4]; n != 0 {
		t.Errorf("a full sync with nothing changed wrote %d lines", n)
	}
	// The hourly rewrite comes with a partial sync: it must still render every service.
	later := time.Now().Add(rewritePeriod + time.Minute)
	k.b.fams[0].now = func() time.Time { return later }
	svc2, sl2 := numberedService(2, false, "10.0.0.2")
	if err := k.b.Sync(ctx, c.st, c.set("ns", svc2.Name, svc2, sl2)); err != nil {
		t.Fatal(err)
	}
	sameAsFresh(t, k, sc, c.st)
	if _, ok := k.r.Chains("nat")["SWYD-SVC-LEFTOVER"]; ok {
		t.Error("a chain nothing renders survived a full sync")
	}
	if !slices.Contains(k.r.Chains(jump.Table)[jump.Chain], jumpRule(jump)) {
		t.Errorf("the deleted jump %q was not put back", jumpRule(jump))
	}
	if err := k.b.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for c, rules := range k.ruleset() {
		for _, r := range rules {
			if strings.Contains(c, Prefix) || strings.Contains(r, Prefix) {
				t.Errorf("after cleanup: %s: %s", c, r)
			}
		}
	}
}

// UDP conntrack: a service's first endpoint clears the entries of its frontend
// (they were being rejected), a removed endpoint the entries DNATed to it.
func TestStaleUDPConntrack(t *testing.T) {
	sc := scenario{}
	c := newCluster(sc)
	svc, _ := numberedService(1, true)
	c.set("ns", svc.Name, svc, nil)
	k := newFakeKernel(t, sc)
	ctx := context.Background()
	if err := k.b.Sync(ctx, c.st, nil); err != nil {
		t.Fatal(err)
	}
	fe := netip.MustParseAddrPort("172.30.0.2:80")
	svc, sl := numberedService(1, true, "10.0.0.1", "10.0.0.2")
	if err := k.b.Sync(ctx, c.st, c.set("ns", svc.Name, svc, sl)); err != nil {
		t.Fatal(err)
	}
	if svcs, _, _ := k.ct.Cleared(); !slices.Contains(svcs, fe) {
		t.Errorf("first endpoints: cleared services %v, want %v", svcs, fe)
	}
	k.ct.Reset()
	svc, sl = numberedService(1, true, "10.0.0.1")
	if err := k.b.Sync(ctx, c.st, c.set("ns", svc.Name, svc, sl)); err != nil {
		t.Fatal(err)
	}
	want := netfilter.StaleEndpoint{Service: fe, Endpoint: netip.MustParseAddrPort("10.0.0.2:53")}
	if _, eps, _ := k.ct.Cleared(); !slices.Contains(eps, want) {
		t.Errorf("a removed endpoint: cleared %v, want %v", eps, want)
	}
}

// Nothing changes on the node before the first sync (the agent may still fail
// to reach its sources); the first sync writes the rules and route_localnet.
func TestNothingChangesBeforeTheFirstSync(t *testing.T) {
	sc := scenario{}
	r := netfilter.NewFakeRestorer()
	sys := netfilter.NewFakeSysctl(map[string]string{netfilter.SysctlRouteLocalnet: "0"})
	b, err := NewBackend(BackendConfig{
		Model: sc.modelConfig(), Families: []dataplane.Family{dataplane.IPv4},
		Restorers: map[dataplane.Family]netfilter.Restorer{dataplane.IPv4: r},
		Jumpers:   map[dataplane.Family]netfilter.Jumper{dataplane.IPv4: netfilter.FakeJumper{R: r}},
		Conntrack: &netfilter.FakeConntrack{}, Sysctl: sys, MasqueradeBit: 14,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Calls()) != 0 || sys.Writes() != 0 {
		t.Fatalf("NewBackend changed the node: %d restores, %d sysctl writes", len(r.Calls()), sys.Writes())
	}
	if err := b.Sync(context.Background(), newCluster(sc).st, nil); err != nil {
		t.Fatal(err)
	}
	if v, _ := sys.Get(netfilter.SysctlRouteLocalnet); v != "1" || len(r.Calls()) == 0 {
		t.Errorf("after the first sync: route_localnet %q, %d restores", v, len(r.Calls()))
	}
}

// A sync whose context ends (the agent's shutdown) returns at once with the
// context's error: the restore in flight applies nothing, it is no restore
// failure, and the next sync rewrites everything.
func TestSyncStopsWithTheContext(t *testing.T) {
	sc := scenario{}
	c := numberedCluster(sc, 20, 3)
	k := newFakeKernel(t, sc)
	if err := k.b.Sync(t.Context(), c.st, nil); err != nil {
		t.Fatal(err)
	}
	before := k.ruleset()
	held := make(chan struct{})
	k.r.OnRestore(func(ctx context.Context) {
		close(held)
		<-ctx.Done() // a restore that would run until stopped
	})
	svc, sl := numberedService(3, false, "10.9.9.9")
	cs := c.set("ns", svc.Name, svc, sl)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- k.b.Sync(ctx, c.st, cs) }()
	waitClosed(t, held, "the restore")
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Sync = %v, want an error wrapping context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sync did not return after its context was canceled")
	}
	if after := k.ruleset(); !maps.EqualFunc(before, after, slices.Equal) {
		t.Error("a stopped sync changed the rules")
	}
	if n := testutil.CollectAndCount(k.reg, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total"); n != 0 {
		t.Errorf("a stopped sync counted as a restore failure (%d series)", n)
	}
	k.r.OnRestore(nil)
	if err := k.b.Sync(t.Context(), c.st, c.set("ns", svc.Name, svc, sl)); err != nil {
		t.Fatal(err)
	}
	if got := k.b.LastLines[dataplane.IPv4]; got < 100 {
		t.Errorf("the sync after a stopped one wrote %d lines; want a full sync", got)
	}
	sameAsFresh(t, k, sc, c.st)
}

// waitClosed waits for ch, failing the test after a generous bound.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not start", what)
	}
}
