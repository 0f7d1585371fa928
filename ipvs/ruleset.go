package ipvs

import (
	"maps"
	"slices"
	"strings"

	"github.com/switchyard/switchyard/dataplane"
)

// ruleSet is one family's rules as the sum of what its frontends contribute.
// Two frontends may render the same set line (the device address of a
// ClusterIP with two ports, a shared endpoint's hairpin rule): it is counted, and
// leaves the kernel with the last frontend that renders it.
type ruleSet struct {
	fixed     []chainSpec
	refs      map[tableLine]int
	frontends map[dataplane.FrontendKey]frontendRules
}

func newRuleSet(o Options) *ruleSet {
	return &ruleSet{fixed: fixedChains(o), refs: map[tableLine]int{}, frontends: map[dataplane.FrontendKey]frontendRules{}}
}

// put replaces what k contributes (empty rules: nothing).
func (s *ruleSet) put(k dataplane.FrontendKey, r frontendRules) {
	for _, l := range s.frontends[k].Lines {
		if s.refs[l]--; s.refs[l] <= 0 {
			delete(s.refs, l)
		}
	}
	for _, l := range r.Lines {
		s.refs[l]++
	}
	if len(r.Lines) == 0 && r.Own == "" {
		delete(s.frontends, k)
	} else {
		s.frontends[k] = r
	}
}

// own are the frontends' own chains (all in the filter table).
func (s *ruleSet) own() map[string][]string {
	out := map[string][]string{}
	for _, r := range s.frontends {
		if r.Own != "" {
			out[r.Own] = r.OwnLines
		}
	}
	return out
}

// Chains renders the whole ruleset, per table: every chain with its lines, set
// lines sorted (for stable output) before the tail.
func (s *ruleSet) Chains() map[string]map[string][]string {
	out := map[string]map[string][]string{}
	for _, t := range tables {
		out[t] = map[string][]string{}
	}
	byChain := map[tableChain][]string{}
	for l := range s.refs {
		tc := tableChain{l.table, chainOf(l.line)}
		byChain[tc] = append(byChain[tc], l.line)
	}
	for _, c := range s.fixed {
		lines := byChain[tableChain{c.table, c.name}]
		slices.Sort(lines)
		out[c.table][c.name] = append(append([]string{}, lines...), c.tail...)
	}
	for name, lines := range s.own() {
		out["filter"][name] = lines
	}
	return out
}

// edits are what replacing the contributions of the frontends in next would
// change, without rewriting the set chains: per table, chains to declare
// (flushed: own chains that are new, changed or going), set lines to delete
// and insert, own chains' lines, and own chains to delete. It looks only at
// those frontends' lines, so a partial sync costs what changed.
func (s *ruleSet) edits(next map[dataplane.FrontendKey]frontendRules) map[string]*tableEdits {
	out := map[string]*tableEdits{}
	for _, t := range tables {
		out[t] = &tableEdits{}
	}
	delta := map[tableLine]int{}
	f := out["filter"]
	for k, r := range next {
		old := s.frontends[k]
		for _, l := range old.Lines {
			delta[l]--
		}
		for _, l := range r.Lines {
			delta[l]++
		}
		if old.Own != "" && old.Own != r.Own {
			f.decl = append(f.decl, old.Own)
			f.dels = append(f.dels, old.Own)
		}
		if r.Own != "" && (r.Own != old.Own || !slices.Equal(r.OwnLines, old.OwnLines)) {
			f.decl = append(f.decl, r.Own)
			f.rules = append(f.rules, r.OwnLines...)
		}
	}
	for l, d := range delta {
		before := s.refs[l]
		switch after := before + d; {
		case before > 0 && after <= 0:
			out[l.table].edits = append(out[l.table].edits, "-D"+strings.TrimPrefix(l.line, "-A"))
		case before <= 0 && after > 0:
			chain := chainOf(l.line)
			out[l.table].edits = append(out[l.table].edits, "-I "+chain+" 1"+strings.TrimPrefix(l.line, "-A "+chain))
		}
	}
	for _, te := range out {
		te.sort()
	}
	return out
}

// tableEdits is one table's part of a restore.
type tableEdits struct {
	decl, edits, rules, dels []string
}

// sort makes the input deterministic, and puts deletions ("-D") before
// insertions ("-I"): a line that goes may be the one a new line replaces.
func (te *tableEdits) sort() {
	slices.Sort(te.decl)
	slices.Sort(te.edits)
	slices.Sort(te.dels)
}

func (te *tableEdits) empty() bool { return len(te.decl)+len(te.edits)+len(te.rules)+len(te.dels) == 0 }

// render is the restore input of the edits, table by table; chains are
// deleted last, once nothing jumps to them.
func render(te map[string]*tableEdits) []byte {
	var b strings.Builder
	for _, t := range tables {
		e := te[t]
		if e == nil || e.empty() {
			continue
		}
		b.WriteString("*" + t + "\n")
		for _, c := range e.decl {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		for _, part := range [][]string{e.edits, e.rules} {
			for _, l := range part {
				b.WriteString(l + "\n")
			}
		}
		for _, c := range e.dels {
			b.WriteString("-X " + c + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return []byte(b.String())
}

// rewrite is the edits of a full sync: every chain of next declared (flushed)
// and written whole, and the strangers (IPVS mode's chains that next does not
// have) flushed and deleted.
func rewrite(next *ruleSet, strangers map[string][]string) map[string]*tableEdits {
	out := map[string]*tableEdits{}
	for t, chains := range next.Chains() {
		e := &tableEdits{}
		names := slices.Sorted(maps.Keys(chains))
		for _, name := range names {
			e.decl = append(e.decl, name)
			e.rules = append(e.rules, chains[name]...)
		}
		for _, name := range strangers[t] {
			e.decl = append(e.decl, name)
			e.dels = append(e.dels, name)
		}
		slices.Sort(e.decl)
		slices.Sort(e.dels)
		out[t] = e
	}
	return out
}
