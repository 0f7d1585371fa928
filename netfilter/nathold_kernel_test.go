package netfilter

import (
	"context"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/test/topology"
)

// HoldNAT leaves one nat chain in an inet table, twice in a row as once; ReleaseNAT
// removes it, and a second release (nothing to remove) is no error.
func TestNATHoldKernel(t *testing.T) {
	topo, run := newVariantNode(t, VariantNFT)
	topology.RequireTools(t, "nft")
	ctx := context.Background()
	for range 2 {
		if err := HoldNAT(ctx, run); err != nil {
			t.Fatal(err)
		}
	}
	out, err := topo.Run(ctx, topo.NodeNS(), "nft", "list", "ruleset")
	if err != nil || strings.Count(out, "type nat hook postrouting") != 1 || !strings.Contains(out, "table inet "+NATHoldTable) {
		t.Errorf("after two holds the ruleset is %q (%v), want one nat chain in table inet %s", out, err, NATHoldTable)
	}
	for range 2 {
		if err := ReleaseNAT(ctx, run); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := topo.Run(ctx, topo.NodeNS(), "nft", "list", "ruleset"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("after the release the ruleset is %q (%v)", out, err)
	}
}
