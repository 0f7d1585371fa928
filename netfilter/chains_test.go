package netfilter

import (
	"slices"
	"testing"
)

// nft lists the chains of every table in the family; only the asked table's
// user-defined ones count.
func TestParseNFTChains(t *testing.T) {
	out := []byte(`{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
{"chain": {"family": "ip", "table": "nat", "name": "SWYD-SERVICES", "handle": 1}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "services", "handle": 2}},
{"chain": {"family": "ip", "table": "nat", "name": "PREROUTING", "handle": 3, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
{"chain": {"family": "ip", "table": "filter", "name": "SWYD-FORWARD", "handle": 4}}]}`)
	got, err := parseNFTChains(out, "ip", "nat")
	if want := []string{"SWYD-SERVICES"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("parseNFTChains = %q, %v; want %q", got, err, want)
	}
	if _, err := parseNFTChains([]byte("table ip nat {"), "ip", "nat"); err == nil {
		t.Error("text output parsed as JSON")
	}
}
