package netfilter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"

	"github.com/switchyard/switchyard/dataplane"
)

// ChainNames lists the names of a table's user-defined chains. For the nft
// variant it asks nft, which reads chains without their rules: iptables-nft-save
// prints every rule, and at 10,000 services (430,000 rules) takes a minute and
// then crashes (Debian's 1.8.9 overflows its stack in libnftnl). Without an nft
// binary, and for the legacy variant, the table's iptables-save output is parsed.
func (r *execRestorer) ChainNames(ctx context.Context, table string) ([]string, error) {
	if !validTableName(table) {
		return nil, fmt.Errorf("listing chains: bad table name %q", table)
	}
	if r.variant == VariantNFT {
		if _, err := exec.LookPath("nft"); err == nil {
			ctx, cancel := context.WithTimeout(ctx, saveTimeout)
			defer cancel()
			out, err := r.run.output(ctx, nil, "nft", "--json", "list", "chains", nftFamily(r.family))
			if err != nil {
				return nil, err
			}
			return parseNFTChains(out, nftFamily(r.family), table)
		}
	}
	data, err := r.Save(ctx, table)
	if err != nil {
		return nil, err
	}
	return chainsOfSave(data, table)
}

// DeleteChains flushes and deletes chains of a table in one transaction (nothing
// may jump to them any more). For the nft variant nft does it: iptables-nft-restore
// --noflush takes minutes over 100,000 chains (it looks every declared chain up in
// its cache), nft a second.
func (r *execRestorer) DeleteChains(ctx context.Context, table string, chains []string) error {
	if !validTableName(table) {
		return fmt.Errorf("deleting chains: bad table name %q", table)
	}
	if len(chains) == 0 {
		return nil
	}
	if r.variant == VariantNFT && !slices.ContainsFunc(chains, notNFTName) {
		if _, err := exec.LookPath("nft"); err == nil {
			_, err := r.run.output(ctx, nftDeleteScript(nftFamily(r.family), table, chains), "nft", "-f", "-")
			return err
		}
	}
	return r.Restore(ctx, deleteChainsInput(table, chains))
}

// nftDeleteScript flushes every chain before deleting any, so that jumps between
// them do not keep one alive; nft applies the whole file as one transaction.
func nftDeleteScript(family, table string, chains []string) []byte {
	var b bytes.Buffer
	for _, verb := range []string{"flush", "delete"} {
		for _, c := range chains {
			fmt.Fprintf(&b, "%s chain %s %s %s\n", verb, family, table, c)
		}
	}
	return b.Bytes()
}

// nftNameRE is what nft takes as a bare chain name (this nft refuses quoted
// ones); other names go through iptables-restore.
var nftNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]*$`)

func notNFTName(c string) bool { return !nftNameRE.MatchString(c) }

// deleteChainsInput is the iptables-restore input that flushes and deletes chains
// of a table.
func deleteChainsInput(table string, chains []string) []byte {
	var b bytes.Buffer
	b.WriteString("*" + table + "\n")
	for _, c := range chains {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range chains {
		b.WriteString("-X " + c + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// nftFamily is the nftables family iptables-nft keeps a family's tables in.
func nftFamily(f dataplane.Family) string {
	if f == dataplane.IPv6 {
		return "ip6"
	}
	return "ip"
}

// parseNFTChains picks one table's chain names out of `nft --json list chains
// FAMILY`, which lists the chains of every table of the family (kube-proxy's
// nftables tables among them).
func parseNFTChains(data []byte, family, table string) ([]string, error) {
	var doc struct {
		Nftables []struct {
			Chain *struct {
				Family string `json:"family"`
				Table  string `json:"table"`
				Name   string `json:"name"`
			} `json:"chain"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("nft --json list chains %s: %w", family, err)
	}
	var out []string
	for _, o := range doc.Nftables {
		if c := o.Chain; c != nil && c.Family == family && c.Table == table && !isBuiltinChain(table, c.Name) {
			out = append(out, c.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// chainsOfSave lists the chains in a table's iptables-save output.
func chainsOfSave(data []byte, table string) ([]string, error) {
	chains, err := ParseSave(data, table)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(chains))
	for c := range chains {
		if !isBuiltinChain(table, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out, nil
}
