package ipvs

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// familyRules keeps one family's rules in the kernel, writing only what changed.
type familyRules struct {
	family   dataplane.Family
	restorer netfilter.Restorer
	jumper   netfilter.Jumper
	opts     Options
	// kernel is what the kernel holds, as last written; it changes only after a
	// restore succeeded.
	kernel *ruleSet
	// full: the next sync rewrites everything (at start, after any failure).
	full bool
}

func newFamilyRules(f dataplane.Family, r netfilter.Restorer, j netfilter.Jumper, o Options) *familyRules {
	return &familyRules{family: f, restorer: r, jumper: j, opts: o, kernel: newRuleSet(o), full: true}
}

// sync writes the rules of the frontends in next (nil rules: the frontend is
// gone); with full, next has every frontend of the family, the jumps are
// ensured, and the kernel is read back and rewritten. It returns the number of
// restore lines written. A restore stopped through ctx fails like any other.
func (fr *familyRules) sync(ctx context.Context, next map[dataplane.FrontendKey]frontendRules, full bool) (int, error) {
	full = full || fr.full
	var want *ruleSet // the next rules, on a full sync
	var te map[string]*tableEdits
	if full {
		if err := fr.ensureJumps(); err != nil {
			fr.full = true
			return 0, err
		}
		want = newRuleSet(fr.opts)
		for k, r := range next {
			want.put(k, r)
		}
		strangers, err := fr.strangers(ctx, want)
		if err != nil {
			fr.full = true
			return 0, err
		}
		te = rewrite(want, strangers)
	} else {
		te = fr.kernel.edits(next)
	}
	data := render(te)
	if len(data) > 0 {
		if err := fr.restorer.Restore(ctx, data); err != nil {
			fr.full = true
			return 0, fmt.Errorf("%s rules: %w", fr.family, err)
		}
	}
	if full {
		fr.kernel = want
	} else {
		for k, r := range next {
			fr.kernel.put(k, r)
		}
	}
	fr.full = false
	return bytes.Count(data, []byte("\n")), nil
}

// ensureJumps puts the jumps from the built-in chains in place (creating their
// target chains); a full sync repairs a jump someone deleted.
func (fr *familyRules) ensureJumps() error {
	for _, j := range Jumps() {
		if err := fr.jumper.Ensure(j); err != nil {
			return fmt.Errorf("%s: jump from %s %s to %s: %w", fr.family, j.Table, j.Chain, j.Target, err)
		}
	}
	return nil
}

// strangers reads the kernel back: IPVS mode's chains that want does not have,
// per table (a chain of a frontend that went while the agent was down).
func (fr *familyRules) strangers(ctx context.Context, want *ruleSet) (map[string][]string, error) {
	chains := want.Chains()
	out := map[string][]string{}
	for _, t := range tables {
		have, err := savedChains(ctx, fr.restorer, t)
		if err != nil {
			return nil, fmt.Errorf("%s %s table: %w", fr.family, t, err)
		}
		for _, c := range have {
			if _, ok := chains[t][c]; !ok {
				out[t] = append(out[t], c)
			}
		}
	}
	return out, nil
}

// savedChains lists IPVS mode's chains in a table.
func savedChains(ctx context.Context, r netfilter.Restorer, table string) ([]string, error) {
	chains, err := r.ChainNames(ctx, table)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range chains {
		if strings.HasPrefix(c, Prefix) {
			out = append(out, c)
		}
	}
	return out, nil
}

// cleanupRules removes IPVS mode's jumps and chains from one family's tables. A
// family without any of its chains is not touched at all (checking for jumps
// would create tables of a variant the node does not use).
func cleanupRules(ctx context.Context, r netfilter.Restorer, j netfilter.Jumper) error {
	te := map[string]*tableEdits{}
	found := false
	for _, t := range tables {
		chains, err := savedChains(ctx, r, t)
		if err != nil {
			return err
		}
		te[t] = &tableEdits{decl: chains, dels: chains}
		te[t].sort()
		found = found || len(chains) > 0
	}
	if !found {
		return nil
	}
	for _, jump := range Jumps() {
		if err := j.Remove(jump); err != nil {
			return err
		}
	}
	return r.Restore(ctx, render(te))
}
