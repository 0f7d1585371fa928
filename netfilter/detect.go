package netfilter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/switchyard/switchyard/dataplane"
)

// Variant is the iptables implementation: the nf_tables based one or the legacy x_tables one. Both
// speak the same rule language; a node must use one only, the one kubelet and the CNI plugin use,
// or rules land in tables nobody evaluates together.
type Variant string

const (
	VariantNFT    Variant = "nft"
	VariantLegacy Variant = "legacy"
	// VariantAuto is the flag value that asks DetectVariant.
	VariantAuto Variant = "auto"
)

// String, Set and Type make *Variant a flag value (pflag.Value).
func (v Variant) String() string { return string(v) }

func (v *Variant) Set(s string) error {
	switch Variant(s) {
	case VariantNFT, VariantLegacy, VariantAuto:
		*v = Variant(s)
		return nil
	}
	return fmt.Errorf("iptables variant %q: want %q, %q or %q", s, VariantAuto, VariantNFT, VariantLegacy)
}

func (v *Variant) Type() string { return "variant" }

// Resolve returns v itself, or the detected variant for VariantAuto (and for "", the unset flag).
func (v Variant) Resolve(run Runner) (Variant, error) {
	if v == VariantAuto || v == "" {
		return DetectVariant(run)
	}
	if err := (&v).Set(string(v)); err != nil {
		return "", err
	}
	return v, nil
}

// kubeletHintRE matches the chains kubelet (1.17 and later) creates in the mangle table of the
// variant it uses: the clearest sign of what the node runs.
var kubeletHintRE = regexp.MustCompile(`(?m)^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) `)

// ruleLineRE matches the rule lines of iptables-save output.
var ruleLineRE = regexp.MustCompile(`(?m)^-`)

const detectTimeout = 30 * time.Second

// DetectVariant picks the variant the node uses, as kube-proxy's image does (the iptables-wrapper
// of kubernetes-sigs/iptables-wrappers): kubelet's hint chains in nft's mangle table, then in
// legacy's tables, and otherwise whichever has more rules, nft on a tie (an empty node). A variant
// whose IPv4 save tool is missing or fails (no kernel support) is never picked; the error says
// when neither can. run builds the commands (nil: the caller's namespace).
func DetectVariant(run Runner) (Variant, error) {
	run = run.orDefault()
	ctx, cancel := context.WithTimeout(context.Background(), detectTimeout)
	defer cancel()
	// Legacy is read whole, never with -t: asking legacy for a table creates it in the kernel,
	// which would then sit next to nft's tables (the mix iptables-nft warns about).
	nft, nftOK := saveBoth(ctx, run, VariantNFT, "-t", "mangle")
	legacy, legacyOK := saveBoth(ctx, run, VariantLegacy)
	switch {
	case !nftOK && !legacyOK:
		return "", errors.New("iptables: neither iptables-nft-save nor iptables-legacy-save runs here")
	case !legacyOK:
		return VariantNFT, nil
	case !nftOK:
		return VariantLegacy, nil
	case kubeletHintRE.Match(nft):
		return VariantNFT, nil
	case kubeletHintRE.Match(legacy):
		return VariantLegacy, nil
	}
	nftAll, _ := saveBoth(ctx, run, VariantNFT)
	if len(ruleLineRE.FindAllIndex(legacy, -1)) > len(ruleLineRE.FindAllIndex(nftAll, -1)) {
		return VariantLegacy, nil
	}
	return VariantNFT, nil
}

// saveBoth returns the IPv4 and IPv6 save output of a variant, and whether its IPv4 tool works
// here: installed, and able to read the kernel's tables. A failing IPv6 tool is ignored (a node
// without IPv6), as the wrapper ignores every failure: detection is best effort.
func saveBoth(ctx context.Context, run Runner, v Variant, args ...string) ([]byte, bool) {
	var out bytes.Buffer
	ok := false
	for _, fam := range []dataplane.Family{dataplane.IPv4, dataplane.IPv6} {
		name, _ := toolName(fam, v, "save")
		b, err := run.output(ctx, nil, name, args...)
		out.Write(b)
		if fam == dataplane.IPv4 {
			ok = err == nil
		}
	}
	return out.Bytes(), ok
}
