package ipvs

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// assertKernel checks that the fake kernel holds exactly what the pure
// functions say st needs: the virtual services (those Switchyard owns; foreign
// lists others that must be there untouched), the device's addresses, and the
// rules of both families, with the jumps to them. Set lines may be in any
// order (partial syncs insert them at the top); tails must come last.
func assertKernel(t *testing.T, k *kernel, st *dataplane.State, o Options, foreign ...string) {
	t.Helper()
	want := Want(st, o, setOf(nodeIPs))
	var wantDump []string
	var bound []netip.Addr
	for _, key := range sortedKeys(want) {
		w := want[key]
		line := fmt.Sprintf("%s %s", key, w.Service.Scheduler)
		if w.Service.Flags&FlagPersistent != 0 {
			line += fmt.Sprintf(" persistent %d", w.Service.Timeout)
		}
		if w.Service.Flags&FlagSourceHash != 0 {
			line += " sh-port"
		}
		for _, d := range w.Dests {
			line += fmt.Sprintf(" -> %s w%d", d.AddrPort(), d.Weight)
		}
		wantDump = append(wantDump, line)
		if w.Bind && !slices.Contains(bound, key.Addr) {
			bound = append(bound, key.Addr)
		}
	}
	wantDump = append(wantDump, foreign...)
	slices.Sort(wantDump)
	got := k.ipvs.Dump()
	slices.Sort(got)
	if !slices.Equal(got, wantDump) {
		t.Errorf("IPVS holds\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(wantDump, "\n  "))
	}
	slices.SortFunc(bound, netip.Addr.Compare)
	addrs, up, ok := k.links.Device(DefaultDevice)
	if !ok || !up || !slices.Equal(addrs, bound) {
		t.Errorf("device %s (exists %v, up %v) has %v, want %v", DefaultDevice, ok, up, addrs, bound)
	}
	for _, fam := range []dataplane.Family{dataplane.IPv4, dataplane.IPv6} {
		rs := newRuleSet(o)
		for key, w := range want {
			if dataplane.FamilyOf(key.Addr) == fam {
				rs.put(key, renderFrontend(st.Frontends[key], w, o, primaryIP(st.Node, fam)))
			}
		}
		assertRules(t, k, fam, rs)
	}
}

func assertRules(t *testing.T, k *kernel, fam dataplane.Family, rs *ruleSet) {
	t.Helper()
	wantChains := rs.Chains()
	tails := map[string][]string{}
	for _, c := range rs.fixed {
		tails[c.name] = c.tail
	}
	for _, tbl := range tables {
		have := k.rules[fam].Chains(tbl)
		for name, rules := range have {
			if !strings.HasPrefix(name, Prefix) {
				continue
			}
			want, ok := wantChains[tbl][name]
			if !ok {
				t.Errorf("%s %s: stray chain %s", fam, tbl, name)
				continue
			}
			if tail := tails[name]; len(rules) < len(tail) || !slices.Equal(rules[len(rules)-len(tail):], tail) {
				t.Errorf("%s %s %s does not end with its fixed rules:\n%s", fam, tbl, name, strings.Join(rules, "\n"))
			}
			if !slices.Equal(sorted(rules), sorted(want)) {
				t.Errorf("%s %s %s has\n%s\nwant\n%s", fam, tbl, name, strings.Join(rules, "\n"), strings.Join(want, "\n"))
			}
		}
		for name := range wantChains[tbl] {
			if _, ok := have[name]; !ok {
				t.Errorf("%s %s: chain %s missing", fam, tbl, name)
			}
		}
	}
	for _, j := range Jumps() {
		rule := jumpRule(j)
		if !slices.Contains(k.rules[fam].Chains(j.Table)[j.Chain], rule) {
			t.Errorf("%s: no jump %q", fam, rule)
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// jumpRule is a jump as the fake jumper writes it.
func jumpRule(j netfilter.Jump) string {
	parts := []string{"-A", j.Chain}
	for _, s := range j.RuleSpec() {
		if strings.Contains(s, " ") {
			s = `"` + s + `"`
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}
