package netfilter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// FakeRestorer is a Restorer for unit tests that keeps rules the way the kernel does: it parses
// the restore input (with --noflush semantics), keeps each table's chains and rules, applies each
// "*table ... COMMIT" block as a transaction, and renders iptables-save output. It checks what the
// kernel would refuse: an unknown table or command, a rule in a chain that does not exist, a jump
// to a target that is neither a chain nor a known target, deleting a chain that is built in, has
// rules or is jumped to, deleting a rule that is not there. A failing block leaves its table as
// it was; the blocks before it stay applied, as with the real tool. A call whose context is done
// fails with an error wrapping ctx.Err() and changes nothing, as the real tool stopped before its
// first COMMIT.
//
// Rules are kept as written (blanks between words normalised), not in iptables-save's canonical
// form: "-d 10.0.0.1" stays so. Tests compare against what they restored.
type FakeRestorer struct {
	mu       sync.Mutex
	tables   map[string]*fakeTable
	failNext int
	calls    []FakeRestoreCall
	// onRestore runs at the start of every Restore (see OnRestore).
	onRestore func(ctx context.Context)
}

// FakeRestoreCall is one Restore call as the fake saw it.
type FakeRestoreCall struct {
	Input []byte
	// Lines counts the input's non-empty lines: what a partial sync must keep small.
	Lines int
	// Err is what Restore returned.
	Err error
}

// ErrFakeInjected is the error of a restore failed by FailNext.
var ErrFakeInjected = errors.New("fake iptables-restore: injected failure")

// fakeTable is one table: the chains with their rules, the policies of the built-in chains, and
// how many rules jump to each chain (so that -X needs no scan of the table).
type fakeTable struct {
	name     string
	chains   map[string][]fakeRule
	policies map[string]string
	refs     map[string]int
}

// fakeRule is a rule as iptables-save prints it ("-A CHAIN ..."), and its -j/-g target.
type fakeRule struct{ line, target string }

// NewFakeRestorer returns a fake with every table's built-in chains, empty, policy ACCEPT.
func NewFakeRestorer() *FakeRestorer {
	f := &FakeRestorer{tables: map[string]*fakeTable{}}
	for name, builtins := range restoreBuiltinChains {
		t := &fakeTable{name: name, chains: map[string][]fakeRule{}, policies: map[string]string{}, refs: map[string]int{}}
		for _, c := range builtins {
			t.chains[c] = nil
			t.policies[c] = "ACCEPT"
		}
		f.tables[name] = t
	}
	return f
}

// FailNext makes the next n Restore calls fail with ErrFakeInjected without changing anything.
func (f *FakeRestorer) FailNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = n
}

// OnRestore makes every Restore call hook with its context first, before the fake looks at
// anything or takes its lock: a test blocks there (on ctx.Done(), or a channel of its own) to
// hold a restore in flight, as the real tool is for minutes at 10,000 services.
func (f *FakeRestorer) OnRestore(hook func(ctx context.Context)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onRestore = hook
}

// Calls returns every Restore call so far, oldest first.
func (f *FakeRestorer) Calls() []FakeRestoreCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// LastLines is the line count of the last Restore call (0 before any).
func (f *FakeRestorer) LastLines() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return 0
	}
	return f.calls[len(f.calls)-1].Lines
}

// Chains returns a copy of a table's chains (nil for an unknown table), built-in ones included.
func (f *FakeRestorer) Chains(table string) map[string][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return nil
	}
	out := make(map[string][]string, len(t.chains))
	for c, rules := range t.chains {
		out[c] = make([]string, len(rules))
		for i, r := range rules {
			out[c][i] = r.line
		}
	}
	return out
}

// ChainNames lists a table's user-defined chains, sorted.
func (f *FakeRestorer) ChainNames(ctx context.Context, table string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fake iptables: listing chains: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return nil, fmt.Errorf("fake iptables: table %q does not exist", table)
	}
	var out []string
	for c := range t.chains {
		if !isBuiltinChain(table, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out, nil
}

// DeleteChains applies the equivalent restore input.
func (f *FakeRestorer) DeleteChains(ctx context.Context, table string, chains []string) error {
	if len(chains) == 0 {
		return nil
	}
	return f.Restore(ctx, deleteChainsInput(table, chains))
}

// Restore applies data block by block, as iptables-restore --noflush does.
func (f *FakeRestorer) Restore(ctx context.Context, data []byte) error {
	if hook := f.restoreHook(); hook != nil {
		hook(ctx)
	}
	return f.restore(ctx, data)
}

// restore is Restore without the hook: FakeJumper's single-rule changes are not restores.
func (f *FakeRestorer) restore(ctx context.Context, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	call := FakeRestoreCall{Input: bytes.Clone(data), Lines: countLines(data)}
	switch {
	case ctx.Err() != nil:
		call.Err = &RestoreError{Tool: "fake-iptables-restore", Message: "stopped", Err: ctx.Err()}
	case f.failNext > 0:
		f.failNext--
		call.Err = ErrFakeInjected
	default:
		call.Err = f.apply(data)
	}
	f.calls = append(f.calls, call)
	return call.Err
}

func (f *FakeRestorer) restoreHook() func(context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.onRestore
}

func countLines(data []byte) int {
	n := 0
	for _, l := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			n++
		}
	}
	return n
}

// apply runs the blocks of data; each block works on a copy of its table that replaces the table
// at COMMIT, so a failure anywhere in the block changes nothing.
func (f *FakeRestorer) apply(data []byte) error {
	var cur *fakeTable // the copy of the block's table; nil outside a block
	lines := strings.Split(string(data), "\n")
	for i, raw := range lines {
		line := strings.TrimSpace(raw)
		n := i + 1
		var err error
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '*':
			cur, err = f.begin(cur, line[1:])
		case cur == nil:
			err = errors.New("not inside a table (missing *table)")
		case line == "COMMIT":
			f.tables[cur.name], cur = cur, nil
		default:
			err = cur.exec(line)
		}
		if err != nil {
			return &RestoreError{Tool: "fake-iptables-restore", Line: n, Text: raw, Message: err.Error(), Err: err}
		}
	}
	if cur != nil {
		err := fmt.Errorf("table %s: COMMIT expected", cur.name)
		return &RestoreError{Tool: "fake-iptables-restore", Line: len(lines), Message: err.Error(), Err: err}
	}
	return nil
}

func (f *FakeRestorer) begin(cur *fakeTable, name string) (*fakeTable, error) {
	if cur != nil {
		return nil, fmt.Errorf("table %s: COMMIT expected before *%s", cur.name, name)
	}
	t, ok := f.tables[name]
	if !ok {
		return nil, fmt.Errorf("unknown table %q", name)
	}
	return t.clone(), nil
}

// Save renders a table as iptables-save does: built-in chains in their order with policies, then
// the other chains sorted by name, then the rules chain by chain in the same order.
func (f *FakeRestorer) Save(ctx context.Context, table string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fake iptables-save: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return nil, fmt.Errorf("fake iptables-save: table %q does not exist", table)
	}
	var b strings.Builder
	b.WriteString("# Generated by fake-iptables-save\n*" + table + "\n")
	order := t.chainOrder()
	for _, c := range order {
		policy := "-"
		if p, ok := t.policies[c]; ok {
			policy = p
		}
		fmt.Fprintf(&b, ":%s %s [0:0]\n", c, policy)
	}
	for _, c := range order {
		for _, r := range t.chains[c] {
			b.WriteString(r.line + "\n")
		}
	}
	b.WriteString("COMMIT\n# Completed by fake-iptables-save\n")
	return []byte(b.String()), nil
}

func (t *fakeTable) chainOrder() []string {
	builtins := restoreBuiltinChains[t.name]
	var user []string
	for c := range t.chains {
		if !isBuiltinChain(t.name, c) {
			user = append(user, c)
		}
	}
	slices.Sort(user)
	return append(slices.Clone(builtins), user...)
}

func (t *fakeTable) clone() *fakeTable {
	c := &fakeTable{name: t.name, chains: make(map[string][]fakeRule, len(t.chains)),
		policies: maps.Clone(t.policies), refs: maps.Clone(t.refs)}
	for k, v := range t.chains {
		c.chains[k] = slices.Clone(v)
	}
	return c
}
