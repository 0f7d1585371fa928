package netfilter

import (
	"strings"
	"testing"
)

const (
	saveEmpty = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
	saveHint  = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
	saveOld   = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n"
	save2     = "*filter\n:X - [0:0]\n-A INPUT -j X\n-A X -j ACCEPT\nCOMMIT\n"
	save3     = "*filter\n:X - [0:0]\n-A INPUT -j X\n-A X -j ACCEPT\n-A X -j DROP\nCOMMIT\n"
)

// detectScript builds the scripted outputs: nft4/nft6 are nft's mangle tables, nftAll nft's whole
// IPv4 ruleset (IPv6 has none), legacy4/6 legacy's rulesets; "-" leaves a tool out (not installed).
func detectScript(nft4, nft6, nftAll, legacy4, legacy6 string) map[string]string {
	m := map[string]string{}
	set := func(k, v string) {
		if v != "-" {
			m[k] = v
		}
	}
	set("iptables-nft-save -t mangle", nft4)
	set("ip6tables-nft-save -t mangle", nft6)
	set("iptables-nft-save", nftAll)
	if nftAll != "-" {
		set("ip6tables-nft-save", saveEmpty)
	}
	set("iptables-legacy-save", legacy4)
	set("ip6tables-legacy-save", legacy6)
	return m
}

func TestDetectVariant(t *testing.T) {
	for _, c := range []struct {
		name   string
		script map[string]string
		want   Variant
	}{
		{"empty node", detectScript(saveEmpty, saveEmpty, saveEmpty, "", ""), VariantNFT},
		{"kubelet on nft", detectScript(saveHint, saveEmpty, saveEmpty, save3, save3), VariantNFT},
		{"kubelet on nft, IPv6 only", detectScript(saveEmpty, saveHint, saveEmpty, save3, ""), VariantNFT},
		{"kubelet on legacy", detectScript(saveEmpty, saveEmpty, save3, saveHint, ""), VariantLegacy},
		{"old kubelet on legacy", detectScript(saveEmpty, saveEmpty, save3, "", saveOld), VariantLegacy},
		{"more legacy rules", detectScript(saveEmpty, saveEmpty, save2, save3, ""), VariantLegacy},
		{"more nft rules", detectScript(saveEmpty, saveEmpty, save3, save2, ""), VariantNFT},
		{"as many", detectScript(saveEmpty, saveEmpty, save2, save2, ""), VariantNFT},
		{"only legacy installed", detectScript("-", "-", "-", "", ""), VariantLegacy},
		{"only nft installed", detectScript(saveEmpty, "-", saveEmpty, "-", "-"), VariantNFT},
		{"no IPv6 tools", detectScript(saveEmpty, "-", save2, save3, "-"), VariantLegacy},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &scriptRunner{out: c.script}
			got, err := DetectVariant(s.run)
			if err != nil || got != c.want {
				t.Errorf("DetectVariant = %q, %v; want %q (calls %q)", got, err, c.want, s.calls)
			}
			// Asking legacy for one table would create it in the kernel.
			for _, call := range s.calls {
				if strings.Contains(call, "legacy") && strings.Contains(call, " -t ") {
					t.Errorf("legacy asked for a table: %q", call)
				}
			}
		})
	}
	s := &scriptRunner{}
	if v, err := DetectVariant(s.run); err == nil {
		t.Errorf("no tools at all: %q, no error", v)
	}
}

func TestVariantFlag(t *testing.T) {
	var v Variant
	for _, s := range []string{"auto", "nft", "legacy"} {
		if err := v.Set(s); err != nil || v.String() != s {
			t.Errorf("Set(%q): %v, now %q", s, err, v)
		}
	}
	if err := v.Set("nftables"); err == nil {
		t.Error("Set(nftables): no error")
	}
	if v.Type() == "" {
		t.Error("no Type")
	}
	s := &scriptRunner{out: detectScript("-", "-", "-", save2, "")}
	if got, err := VariantAuto.Resolve(s.run); err != nil || got != VariantLegacy {
		t.Errorf("auto resolved to %q, %v", got, err)
	}
	if got, err := VariantNFT.Resolve(nil); err != nil || got != VariantNFT {
		t.Errorf("nft resolved to %q, %v", got, err)
	}
	if _, err := Variant("bogus").Resolve(nil); err == nil {
		t.Error("bogus resolved")
	}
}
