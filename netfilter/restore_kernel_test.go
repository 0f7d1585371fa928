package netfilter

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/test/topology"
)

// The real tools, each variant in a simulated node of its own (never both in one namespace).

func newVariantNode(t *testing.T, v Variant) (*topology.Topology, Runner) {
	t.Helper()
	support.Require(t)
	topology.RequireTools(t, VariantTools(v)...)
	topo := support.Build(t, topology.Scenario{Node: topology.Node{Name: "node-a", IPs: []string{"192.168.0.2", "fd00::2"}}})
	return topo, topo.CommandIn(topo.NodeNS())
}

func TestRestorerKernel(t *testing.T) {
	for _, v := range []Variant{VariantNFT, VariantLegacy} {
		t.Run(string(v), func(t *testing.T) {
			topo, run := newVariantNode(t, v)
			t.Run("steps as the fake", func(t *testing.T) { testStepsAgainstFake(t, NewRestorer(dataplane.IPv4, v, run)) })
			t.Run("delete chains as the fake", func(t *testing.T) {
				testDeleteChains(t, NewRestorer(dataplane.IPv4, v, run))
				testDeleteChains(t, NewFakeRestorer())
			})
			t.Run("IPv6 and a failure", func(t *testing.T) { testIPv6Failure(t, NewRestorer(dataplane.IPv6, v, run)) })
			t.Run("detect", func(t *testing.T) {
				if got, err := DetectVariant(run); err != nil || got != v {
					t.Errorf("DetectVariant in a node with %s rules = %q, %v", v, got, err)
				}
			})
			assertOnlyVariant(t, topo, v)
		})
	}
}

// testStepsAgainstFake runs the fake's steps on the real tool: same outcomes, same state after
// every step.
func testStepsAgainstFake(t *testing.T, r Restorer) {
	real := runRestoreSteps(t, r)
	fake := runRestoreSteps(t, NewFakeRestorer())
	for i, s := range restoreSteps {
		if !reflect.DeepEqual(real[i], fake[i]) {
			t.Errorf("after step %q the kernel has\n%q\n%q\nthe fake\n%q\n%q", s.name, real[i][0], real[i][1], fake[i][0], fake[i][1])
		}
	}
}

// testDeleteChains deletes chains that jump to each other in one call; the
// others stay.
func testDeleteChains(t *testing.T, r Restorer) {
	in := "*filter\n:DC-A - [0:0]\n:DC-B - [0:0]\n:DC-KEEP - [0:0]\n-A DC-A -j DC-B\n-A DC-B -j DC-A\n-A DC-KEEP -j ACCEPT\nCOMMIT\n"
	if err := r.Restore(t.Context(), []byte(in)); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteChains(t.Context(), "filter", []string{"DC-A", "DC-B"}); err != nil {
		t.Fatal(err)
	}
	if got, err := r.ChainNames(t.Context(), "filter"); err != nil || slices.Contains(got, "DC-A") || slices.Contains(got, "DC-B") || !slices.Contains(got, "DC-KEEP") {
		t.Errorf("after deleting DC-A and DC-B: %q, %v", got, err)
	}
	if err := r.DeleteChains(t.Context(), "filter", []string{"DC-KEEP"}); err != nil {
		t.Error(err)
	}
	// A chain something jumps to cannot go; nothing else does either.
	if err := r.Restore(t.Context(), []byte("*filter\n:DC-C - [0:0]\n:DC-D - [0:0]\n-A INPUT -j DC-D\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteChains(t.Context(), "filter", []string{"DC-C", "DC-D"}); err == nil {
		t.Error("deleted a chain INPUT jumps to")
	}
	if got, _ := r.ChainNames(t.Context(), "filter"); !slices.Contains(got, "DC-C") {
		t.Errorf("a failed DeleteChains deleted DC-C: %q", got)
	}
	if err := r.Restore(t.Context(), []byte("*filter\n-D INPUT -j DC-D\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteChains(t.Context(), "filter", []string{"DC-C", "DC-D"}); err != nil {
		t.Error(err)
	}
}

// testIPv6Failure restores IPv6 rules, then a bad input: the error names the line, and the rules
// are what they were.
func testIPv6Failure(t *testing.T, r Restorer) {
	good := "*nat\n:SY-SVC - [0:0]\n-A OUTPUT -j SY-SVC\n" +
		"-A SY-SVC -d fd00:96::10/128 -p udp -m udp --dport 53 -j DNAT --to-destination [fd00:1::1]:5353\nCOMMIT\n"
	if err := r.Restore(t.Context(), []byte(good)); err != nil {
		t.Fatal(err)
	}
	before := normalSave(t, r, "nat")
	if want := "-A SY-SVC -d fd00:96::10/128 -p udp -m udp --dport 53 -j DNAT --to-destination [fd00:1::1]:5353"; !hasLine(before, want) {
		t.Fatalf("Save after restore:\n%s\nmissing %q", strings.Join(before, "\n"), want)
	}
	bad := "*nat\n:SY-SVC - [0:0]\n-A SY-SVC -j RETURN\n-A SY-SVC --bogus 1 -j RETURN\nCOMMIT\n"
	err := r.Restore(t.Context(), []byte(bad))
	var re *RestoreError
	if !errors.As(err, &re) || re.Line != 4 || re.Text != "-A SY-SVC --bogus 1 -j RETURN" {
		t.Fatalf("bad restore: %#v, want a RestoreError for line 4", err)
	}
	if !strings.Contains(err.Error(), "--bogus") {
		t.Errorf("the error does not show the line: %v", err)
	}
	if after := normalSave(t, r, "nat"); !reflect.DeepEqual(after, before) {
		t.Errorf("a failed restore changed the rules:\n%q\nwas\n%q", after, before)
	}
}

func hasLine(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

// assertOnlyVariant checks that nothing of the other variant appeared in the node (detection
// included): no legacy tables next to nft's, no nft tables next to legacy's.
func assertOnlyVariant(t *testing.T, topo *topology.Topology, v Variant) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if v == VariantNFT {
		out, err := topo.Run(ctx, topo.NodeNS(), "cat", "/proc/net/ip_tables_names", "/proc/net/ip6_tables_names")
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("legacy tables in the nft node: %q, %v", out, err)
		}
		return
	}
	topology.RequireTools(t, "nft")
	out, err := topo.Run(ctx, topo.NodeNS(), "nft", "list", "tables")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("nft tables in the legacy node: %q, %v", out, err)
	}
}

// An empty node is nft's, and detecting it creates nothing.
func TestDetectVariantEmptyNode(t *testing.T) {
	topo, run := newVariantNode(t, VariantNFT)
	topology.RequireTools(t, VariantTools(VariantLegacy)...)
	if got, err := DetectVariant(run); err != nil || got != VariantNFT {
		t.Errorf("DetectVariant in an empty node = %q, %v", got, err)
	}
	assertOnlyVariant(t, topo, VariantLegacy) // no nft tables either
	assertOnlyVariant(t, topo, VariantNFT)
}
