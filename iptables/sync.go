package iptables

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// tables Switchyard writes, in the order each restore writes them.
var tables = []string{"filter", "nat"}

// setChains are the dispatch chains whose rules match disjoint traffic, so their
// order does not matter (SWYD-SERVICES keeps its NodePorts jump last: additions
// are inserted at the top). A partial sync edits them rule by rule instead of
// rewriting them: at 10,000 services they are most of the ruleset.
var setChains = map[string]bool{
	ChainServices: true, ChainExternalServices: true, ChainNodePorts: true, ChainProxyFirewall: true,
}

// familySync keeps one family's chains in the kernel, writing only what changed.
type familySync struct {
	cfg      Config
	restorer netfilter.Restorer

	// kernel is what the kernel holds, per table and chain, as last written; it
	// changes only after a restore succeeded.
	kernel map[string]Chains
	// owned are the per-service chains each service rendered last time.
	owned map[dataplane.ServiceName][]tableChain
	// full: the next sync rewrites everything (at start, after any failure).
	full bool
	// rewritten is when everything was last rewritten; now is the clock.
	rewritten time.Time
	now       func() time.Time
}

// rewritePeriod is how often a full sync rewrites every rule, as kube-proxy's
// FullSyncPeriod: in between, full syncs compare the whole desired ruleset with
// what was written and write only the difference. Rewriting 10,000 services'
// rules takes minutes with iptables-nft, so every --sync-period would never end.
const rewritePeriod = time.Hour

type tableChain struct{ table, chain string }

func newFamilySync(cfg Config, r netfilter.Restorer) *familySync {
	return &familySync{cfg: cfg, restorer: r, kernel: map[string]Chains{}, owned: map[dataplane.ServiceName][]tableChain{},
		full: true, now: time.Now}
}

// sync writes the rules of st. At start, after a failure and once per
// rewritePeriod it rewrites all of them, checked against what the kernel holds;
// other full syncs (changes nil) compare every service's rules with what was
// written, and partial ones only the changed services'; the dispatch chains are
// edited rule by rule. A restore stopped through ctx fails like any other: each
// table is as it was or as the input made it, and the next sync rewrites all.
func (f *familySync) sync(ctx context.Context, st *dataplane.State, changes *dataplane.ChangeSet) (lines int, err error) {
	full := f.full || f.now().Sub(f.rewritten) >= rewritePeriod
	names := f.changedServices(st, changes, full)
	want := map[string]Chains{"nat": {}, "filter": {}}
	top := TopRules(st, f.cfg)
	merge(want, top)
	owned := map[dataplane.ServiceName][]tableChain{}
	for _, name := range names {
		r := ServiceRules(st, name, f.cfg)
		merge(want, r)
		owned[name] = chainList(r)
	}
	stale := f.orphans(names, owned)
	if full {
		if stale, err = f.strangers(ctx, want, stale); err != nil {
			f.full = true
			return 0, fmt.Errorf("%s: %w", f.cfg.Family, err)
		}
	}
	data := f.render(want, stale, full)
	if len(data) == 0 {
		return 0, nil
	}
	if err := f.restorer.Restore(ctx, data); err != nil {
		f.full = true
		return 0, fmt.Errorf("%s: %w", f.cfg.Family, err)
	}
	f.commit(want, stale, owned)
	if full {
		f.rewritten = f.now()
	}
	return bytes.Count(data, []byte("\n")), nil
}

// changedServices are the services to render: on a full sync or with changes
// nil every service there is and every service that had rules (a rewrite must
// render them all, or it would take their chains for strangers).
func (f *familySync) changedServices(st *dataplane.State, changes *dataplane.ChangeSet, full bool) []dataplane.ServiceName {
	if changes != nil && !full {
		return slices.SortedFunc(maps.Keys(changes.Services), compareNames)
	}
	names := map[dataplane.ServiceName]bool{}
	for n := range st.Services {
		names[n] = true
	}
	for n := range f.owned {
		names[n] = true
	}
	return slices.SortedFunc(maps.Keys(names), compareNames)
}

func compareNames(a, b dataplane.ServiceName) int {
	return strings.Compare(a.String(), b.String())
}

func merge(into map[string]Chains, r Rules) {
	maps.Copy(into["nat"], r.NAT)
	maps.Copy(into["filter"], r.Filter)
}

func chainList(r Rules) []tableChain {
	var out []tableChain
	for c := range r.NAT {
		out = append(out, tableChain{"nat", c})
	}
	for c := range r.Filter {
		out = append(out, tableChain{"filter", c})
	}
	return out
}

// orphans are the chains the changed services owned and no longer render.
func (f *familySync) orphans(names []dataplane.ServiceName, owned map[dataplane.ServiceName][]tableChain) []tableChain {
	var out []tableChain
	for _, name := range names {
		now := map[tableChain]bool{}
		for _, tc := range owned[name] {
			now[tc] = true
		}
		for _, tc := range f.owned[name] {
			if !now[tc] {
				out = append(out, tc)
			}
		}
	}
	return out
}

// strangers lists the kernel's chains (a rewrite repairs drift): every SWYD-
// chain nothing renders is to go, with the orphans already known. A table that
// cannot be listed only costs the chains nobody knows about: harmless, since
// nothing jumps there. Only a done ctx is an error: the sync is to stop.
func (f *familySync) strangers(ctx context.Context, want map[string]Chains, orphans []tableChain) ([]tableChain, error) {
	out := slices.Clone(orphans)
	for _, t := range tables {
		have, err := f.restorer.ChainNames(ctx, t)
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("listing the %s chains: %w", t, cerr)
		}
		if err != nil {
			klog.ErrorS(err, "Listing the chains; unknown stale chains stay", "family", f.cfg.Family, "table", t)
			continue
		}
		for _, chain := range have {
			_, wanted := want[t][chain]
			if !wanted && strings.HasPrefix(chain, Prefix) && !slices.Contains(out, tableChain{t, chain}) {
				out = append(out, tableChain{t, chain})
			}
		}
	}
	return out, nil
}

// render is the restore input: per table, the chains to (re)write declared
// (which flushes them) and filled, set chains edited rule by rule on a partial
// sync, and stale chains flushed and deleted last, once nothing jumps to them.
func (f *familySync) render(want map[string]Chains, stale []tableChain, full bool) []byte {
	var b bytes.Buffer
	for _, t := range tables {
		var decl, rules, edits, dels []string
		for _, chain := range slices.Sorted(maps.Keys(want[t])) {
			lines := want[t][chain]
			old, known := f.kernel[t][chain]
			switch {
			case full || !known:
				decl = append(decl, ":"+chain+" - [0:0]")
				rules = append(rules, lines...)
			case slices.Equal(old, lines):
			case setChains[chain]:
				edits = append(edits, setEdits(chain, old, lines)...)
			default:
				decl = append(decl, ":"+chain+" - [0:0]")
				rules = append(rules, lines...)
			}
		}
		for _, tc := range stale {
			if tc.table == t {
				decl = append(decl, ":"+tc.chain+" - [0:0]")
				dels = append(dels, "-X "+tc.chain)
			}
		}
		if len(decl)+len(edits) == 0 {
			continue
		}
		fmt.Fprintf(&b, "*%s\n", t)
		for _, part := range [][]string{decl, edits, rules, dels} {
			for _, l := range part {
				b.WriteString(l)
				b.WriteByte('\n')
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.Bytes()
}

// setEdits turns old into new with deletions and insertions at the top.
func setEdits(chain string, old, new []string) []string {
	have := map[string]bool{}
	for _, l := range old {
		have[l] = true
	}
	keep := map[string]bool{}
	var out []string
	for _, l := range new {
		keep[l] = true
	}
	for _, l := range old {
		if !keep[l] {
			out = append(out, "-D"+strings.TrimPrefix(l, "-A"))
		}
	}
	for _, l := range new {
		if !have[l] {
			out = append(out, "-I "+chain+" 1"+strings.TrimPrefix(l, "-A "+chain))
		}
	}
	return out
}

// commit records what the restore wrote.
func (f *familySync) commit(want map[string]Chains, stale []tableChain, owned map[dataplane.ServiceName][]tableChain) {
	for _, t := range tables {
		if f.kernel[t] == nil {
			f.kernel[t] = Chains{}
		}
		maps.Copy(f.kernel[t], want[t])
	}
	for _, tc := range stale {
		delete(f.kernel[tc.table], tc.chain)
	}
	for name, chains := range owned {
		if len(chains) == 0 {
			delete(f.owned, name)
		} else {
			f.owned[name] = chains
		}
	}
	f.full = false
}
