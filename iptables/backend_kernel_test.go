package iptables

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
	"github.com/switchyard/switchyard/test/topology"
)

// The backend against the real kernel, with both variants' binaries (each in a
// node namespace of its own: the two must not meet): a full sync, partial syncs,
// a full sync again, then cleanup leaves nothing of Switchyard.
func TestBackendOnTheKernel(t *testing.T) {
	for _, v := range []netfilter.Variant{netfilter.VariantNFT, netfilter.VariantLegacy} {
		t.Run(string(v), func(t *testing.T) {
			support.Require(t)
			topology.RequireTools(t, netfilter.VariantTools(v)...)
			topology.RequireTools(t, strings.TrimSuffix(netfilter.VariantTools(v)[0], "-restore"))
			topo := support.Build(t, topology.Scenario{Node: topology.Node{Name: nodeName, IPs: []string{"192.168.0.2"}}})
			err := topology.OnThreadIn(topo.NodeNS(), func() error { return kernelRound(t, topo, v) })
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// At 10,000 services iptables-nft-save takes a minute and then crashes (Debian's
// 1.8.9), and iptables-nft-restore --noflush takes minutes to delete 110,000
// chains: cleanup and the rewrite's search for stale chains use nft instead.
func TestCleanupAt10kServicesOnTheKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a scale test of the userland tools (the kernel matrix runs with -short)")
	}
	v := netfilter.VariantNFT
	support.Require(t)
	topology.RequireTools(t, append(netfilter.VariantTools(v), "nft")...)
	topo := support.Build(t, topology.Scenario{Node: topology.Node{Name: nodeName, IPs: []string{"192.168.0.2"}}})
	sc := scenario{}
	c := numberedCluster(sc, 10000, 10)
	// Loaded without --noflush (the namespace is the test's own): 10 s instead of
	// the two minutes a first sync takes.
	all := render(t, c.st, sc.cfg())
	rules := []byte(restoreText(all, BaseJumps(DefaultConfig(dataplane.IPv4))))
	load := topo.CommandContext(context.Background(), topo.NodeNS(), "iptables-nft-restore")
	load.Stdin = bytes.NewReader(rules)
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("loading the rules of 10,000 services: %v: %s", err, out)
	}
	r := netfilter.NewRestorer(dataplane.IPv4, v, topo.CommandIn(topo.NodeNS()))
	if n := countChains(t, r, "nat"); n != len(all.NAT) || n < 10000*11 {
		t.Errorf("listed %d SWYD- chains in nat, want %d", n, len(all.NAT))
	}
	err := topology.OnThreadIn(topo.NodeNS(), func() error {
		j, err := netfilter.NewJumper(dataplane.IPv4, v)
		if err != nil {
			return err
		}
		start := time.Now()
		if err := Cleanup(t.Context(), dataplane.IPv4, r, j); err != nil {
			return err
		}
		t.Logf("cleanup of 10,000 services: %v", time.Since(start))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		if n := countChains(t, r, table); n != 0 {
			t.Errorf("after cleanup the %s table has %d SWYD- chains", table, n)
		}
	}
}

func chainNames(t *testing.T, r netfilter.Restorer, table string) []string {
	t.Helper()
	names, err := r.ChainNames(t.Context(), table)
	if err != nil {
		t.Errorf("listing the %s chains: %v", table, err)
	}
	return names
}

func countChains(t *testing.T, r netfilter.Restorer, table string) int {
	n := 0
	for _, c := range chainNames(t, r, table) {
		if strings.HasPrefix(c, Prefix) {
			n++
		}
	}
	return n
}

// kernelRound runs on a thread in the node namespace: errors come back, t.Errorf
// reports the rest (t.Fatal would end the thread's goroutine, not the test).
func kernelRound(t *testing.T, topo *topology.Topology, v netfilter.Variant) error {
	sc := scenario{}
	c := newCluster(sc)
	for i := range 5 {
		svc, sl := numberedService(i, i%2 == 1, tenEndpoints(i)[:3]...)
		c.set("ns", svc.Name, svc, sl)
	}
	r := netfilter.NewRestorer(dataplane.IPv4, v, topo.CommandIn(topo.NodeNS()))
	b, err := kernelBackend(sc, v, r)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := b.Sync(ctx, c.st, nil); err != nil {
		return err
	}
	svc, sl := numberedService(2, false, "10.50.0.1", "10.50.0.2")
	if err := b.Sync(ctx, c.st, c.set("ns", svc.Name, svc, sl)); err != nil {
		t.Errorf("partial sync: %v", err)
	}
	if err := b.Sync(ctx, c.st, c.set("ns", "svc-3", nil, nil)); err != nil {
		t.Errorf("partial sync removing a service: %v", err)
	}
	nat := saved(t, r, "nat")
	if !strings.Contains(nat, "10.50.0.2:8080") || strings.Contains(nat, "ns/svc-3") {
		t.Errorf("the partial syncs are not in the kernel:\n%s", nat)
	}
	if !strings.Contains(nat, "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j SWYD-SERVICES") {
		t.Errorf("no jump to SWYD-SERVICES:\n%s", nat)
	}
	if err := b.Sync(ctx, c.st, nil); err != nil {
		t.Errorf("full sync over the kernel's rules: %v", err)
	}
	if err := b.Cleanup(ctx); err != nil {
		return err
	}
	for _, table := range []string{"nat", "filter"} {
		if s := saved(t, r, table); strings.Contains(s, Prefix) {
			t.Errorf("after cleanup the %s table still has Switchyard's rules:\n%s", table, s)
		}
	}
	return nil
}

// saved runs on the namespace's thread, where t.Fatal must not be called.
func saved(t *testing.T, r netfilter.Restorer, table string) string {
	t.Helper()
	out, err := r.Save(t.Context(), table)
	if err != nil {
		t.Errorf("iptables-save %s: %v", table, err)
	}
	return string(out)
}
