package iptables

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

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
}

type tableChain struct{ table, chain string }

func newFamilySync(cfg Config, r netfilter.Restorer) *familySync {
	return &familySync{cfg: cfg, restorer: r, kernel: map[string]Chains{}, owned: map[dataplane.ServiceName][]tableChain{}, full: true}
}

// sync writes the rules of st: with changes nil (or after a failure) all of
// them, checked against what the kernel really holds; else the dispatch chains'
// changed rules and the chains of the changed services.
func (f *familySync) sync(st *dataplane.State, changes *dataplane.ChangeSet) (lines int, err error) {
	full := changes == nil || f.full
	names := changedServices(st, changes, full)
	want := map[string]Chains{"nat": {}, "filter": {}}
	top := TopRules(st, f.cfg)
	merge(want, top)
	owned := map[dataplane.ServiceName][]tableChain{}
	for _, name := range names {
		r := ServiceRules(st, name, f.cfg)
		merge(want, r)
		owned[name] = chainList(r)
	}
	var stale []tableChain
	if full {
		if stale, err = f.strangers(want); err != nil {
			f.full = true
			return 0, err
		}
	} else {
		stale = f.orphans(names, owned)
	}
	data := f.render(want, stale, full)
	if len(data) == 0 {
		return 0, nil
	}
	if err := f.restorer.Restore(data); err != nil {
		f.full = true
		return 0, fmt.Errorf("%s: %w", f.cfg.Family, err)
	}
	f.commit(want, stale, owned, full)
	return bytes.Count(data, []byte("\n")), nil
}

// changedServices are the services to render: all of them on a full sync.
func changedServices(st *dataplane.State, changes *dataplane.ChangeSet, full bool) []dataplane.ServiceName {
	if full {
		return slices.SortedFunc(maps.Keys(st.Services), compareNames)
	}
	return slices.SortedFunc(maps.Keys(changes.Services), compareNames)
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

// strangers reads the kernel back (a full sync repairs drift): its rules
// replace the cache, and every SWYD- chain nothing renders is to go.
func (f *familySync) strangers(want map[string]Chains) ([]tableChain, error) {
	var out []tableChain
	for _, t := range tables {
		data, err := f.restorer.Save(t)
		if err != nil {
			return nil, fmt.Errorf("%s %s table: %w", f.cfg.Family, t, err)
		}
		have, err := netfilter.ParseSave(data, t)
		if err != nil {
			return nil, err
		}
		f.kernel[t] = Chains{}
		for chain, rules := range have {
			if !strings.HasPrefix(chain, Prefix) {
				continue
			}
			f.kernel[t][chain] = rules
			if _, ok := want[t][chain]; !ok {
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
func (f *familySync) commit(want map[string]Chains, stale []tableChain, owned map[dataplane.ServiceName][]tableChain, full bool) {
	for _, t := range tables {
		if f.kernel[t] == nil {
			f.kernel[t] = Chains{}
		}
		maps.Copy(f.kernel[t], want[t])
	}
	for _, tc := range stale {
		delete(f.kernel[tc.table], tc.chain)
	}
	if full {
		f.owned = owned
	} else {
		for name, chains := range owned {
			if len(chains) == 0 {
				delete(f.owned, name)
			} else {
				f.owned[name] = chains
			}
		}
	}
	f.full = false
}

// errNoFamilies: a node without addresses has nothing to program yet.
var errNoFamilies = errors.New("no IP family to program")
