package netfilter

import (
	"context"
	"slices"
	"strings"
)

// FakeJumper keeps the jumps in a FakeRestorer's built-in chains, so a test
// sees the whole ruleset in one place. Like the real Jumper it takes no context
// (each of its changes is one short iptables run), and the FakeRestorer's
// OnRestore hook does not see its changes.
type FakeJumper struct{ R *FakeRestorer }

func (f FakeJumper) Ensure(j Jump) error {
	line := jumpRule(j)
	if slices.Contains(f.R.Chains(j.Table)[j.Chain], line) {
		return nil
	}
	in := "*" + j.Table + "\n"
	if _, ok := f.R.Chains(j.Table)[j.Target]; !ok {
		in += "-N " + j.Target + "\n"
	}
	in += "-I " + j.Chain + " 1" + strings.TrimPrefix(line, "-A "+j.Chain) + "\nCOMMIT\n"
	return f.R.restore(context.Background(), []byte(in))
}

func (f FakeJumper) Remove(j Jump) error {
	line := jumpRule(j)
	if !slices.Contains(f.R.Chains(j.Table)[j.Chain], line) {
		return nil
	}
	return f.R.restore(context.Background(), []byte("*"+j.Table+"\n-D"+strings.TrimPrefix(line, "-A")+"\nCOMMIT\n"))
}

// jumpRule is the jump as a restore line, quoted as the rules are.
func jumpRule(j Jump) string {
	parts := append([]string{"-A", j.Chain}, j.Args...)
	if j.Comment != "" {
		parts = append(parts, Comment(j.Comment)...)
	}
	return strings.Join(append(parts, "-j", j.Target), " ")
}
