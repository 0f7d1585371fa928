package netfilter

import (
	"context"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// restoreStep is one restore input and whether the kernel refuses it. The same steps run against
// the FakeRestorer here and against both real variants in restore_kernel_test.go, which also
// checks that the fake ends every step in the state the kernel does. The rules are written in
// iptables-save's canonical form so that the two can be compared line by line.
type restoreStep struct {
	name, input string
	fails       bool
}

var restoreSteps = []restoreStep{
	{"base", `*filter
:SY-A - [0:0]
:SY-B - [0:0]
-A INPUT -j SY-A
-A SY-A -s 10.0.0.1/32 -j SY-B
-A SY-B -p tcp -m tcp --dport 80 -m comment --comment "a b" -j ACCEPT
COMMIT
*nat
:SY-NAT - [0:0]
-A OUTPUT -j SY-NAT
-A SY-NAT -d 10.96.0.1/32 -p udp -m udp --dport 53 -j DNAT --to-destination 10.0.1.1:53
COMMIT
`, false},
	{"a declaration flushes", "*filter\n:SY-B - [0:0]\n-A SY-B -j DROP\nCOMMIT\n", false},
	{"jump to a missing chain", "*filter\n:SY-C - [0:0]\n-A SY-C -j SY-NOPE\nCOMMIT\n", true},
	{"append to a missing chain", "*filter\n-A SY-NOPE -j ACCEPT\nCOMMIT\n", true},
	{"delete a chain with rules", "*filter\n-X SY-B\nCOMMIT\n", true},
	{"delete a referenced chain", "*filter\n:SY-B - [0:0]\n-X SY-B\nCOMMIT\n", true},
	{"delete a missing chain", "*filter\n-X SY-NOPE\nCOMMIT\n", true},
	{"jump to a chain declared later", "*filter\n:SY-C - [0:0]\n-A SY-C -j SY-D\n:SY-D - [0:0]\nCOMMIT\n", true},
	{"delete a missing rule", "*filter\n-D INPUT -j SY-B\nCOMMIT\n", true},
	{"create an existing chain", "*filter\n-N SY-A\nCOMMIT\n", true},
	{"DNAT in filter", "*filter\n:SY-C - [0:0]\n-A SY-C -j DNAT --to-destination 10.0.0.1\nCOMMIT\n", true},
	{"goto a target", "*filter\n:SY-C - [0:0]\n-A SY-C -g ACCEPT\nCOMMIT\n", true},
	{"chain name too long", "*filter\n:SY-ABCDEFGHIJKLMNOPQRSTUVWXYZ - [0:0]\nCOMMIT\n", true},
	{"unknown table", "*bogus\nCOMMIT\n", true},
	{"no COMMIT", "*filter\n:SY-C - [0:0]\n", true},
	{"the second table fails", "*filter\n:SY-Y - [0:0]\nCOMMIT\n*nat\n-A SY-NOPE -j ACCEPT\nCOMMIT\n", true},
	{"a built-in declaration keeps the rules", "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:SY-Z - [0:0]\nCOMMIT\n", false},
	{"insert, delete by number and by rule, flush", `*filter
-I INPUT 1 -j SY-Z
-I INPUT -j SY-Y
-A SY-Z -j ACCEPT
-A SY-Z -j DROP
-D SY-Z 1
-A SY-Y -s 10.0.0.2/32 -j RETURN
-D SY-Y -s 10.0.0.2/32 -j RETURN
-A SY-Y -j RETURN
-F SY-Y
-N SY-N
-P FORWARD ACCEPT
COMMIT
`, false},
	{"removal the kube-proxy way", `*filter
:SY-A - [0:0]
:SY-B - [0:0]
-D INPUT -j SY-A
-X SY-A
-X SY-B
COMMIT
*nat
:SY-NAT - [0:0]
-A SY-NAT -j RETURN
COMMIT
`, false},
}

// normalSave is Save's output without comments and counters, as lines.
func normalSave(t testing.TB, r Restorer, table string) []string {
	t.Helper()
	out, err := r.Save(t.Context(), table)
	if err != nil {
		t.Fatalf("Save(%s): %v", table, err)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		lines = append(lines, saveCountersRE.ReplaceAllString(l, ""))
	}
	return lines
}

var saveCountersRE = regexp.MustCompile(` \[[0-9]+:[0-9]+\]$`)

// runRestoreSteps applies the steps to r, checking each one's outcome, and returns the filter and
// nat tables after each step.
func runRestoreSteps(t *testing.T, r Restorer) [][2][]string {
	t.Helper()
	var states [][2][]string
	for _, s := range restoreSteps {
		err := r.Restore(t.Context(), []byte(s.input))
		if (err != nil) != s.fails {
			t.Errorf("step %q: error %v, want failure %v", s.name, err, s.fails)
		}
		filter, nat := normalSave(t, r, "filter"), normalSave(t, r, "nat")
		checkChainNames(t, r, "filter", filter)
		checkChainNames(t, r, "nat", nat)
		states = append(states, [2][]string{filter, nat})
	}
	return states
}

// checkChainNames compares ChainNames with the user-defined chains a table's Save declares.
func checkChainNames(t *testing.T, r Restorer, table string, saved []string) {
	t.Helper()
	var want []string
	for _, l := range saved {
		if name, ok := strings.CutPrefix(l, ":"); ok && !isBuiltinChain(table, strings.Fields(name)[0]) {
			want = append(want, strings.Fields(name)[0])
		}
	}
	slices.Sort(want)
	got, err := r.ChainNames(t.Context(), table)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ChainNames(%s) = %q, %v; Save declares %q", table, got, err, want)
	}
}

func TestFakeRestorerSteps(t *testing.T) {
	f := NewFakeRestorer()
	states := runRestoreSteps(t, f)
	wantFilter := []string{"*filter", ":INPUT ACCEPT", ":FORWARD ACCEPT", ":OUTPUT ACCEPT", ":SY-N -", ":SY-Y -", ":SY-Z -",
		"-A INPUT -j SY-Y", "-A INPUT -j SY-Z", "-A SY-Z -j DROP", "COMMIT"}
	wantNAT := []string{"*nat", ":PREROUTING ACCEPT", ":INPUT ACCEPT", ":OUTPUT ACCEPT", ":POSTROUTING ACCEPT", ":SY-NAT -",
		"-A OUTPUT -j SY-NAT", "-A SY-NAT -j RETURN", "COMMIT"}
	last := states[len(states)-1]
	if !reflect.DeepEqual(last[0], wantFilter) || !reflect.DeepEqual(last[1], wantNAT) {
		t.Errorf("end state:\n%q\n%q\nwant\n%q\n%q", last[0], last[1], wantFilter, wantNAT)
	}
}

// A failing block changes nothing in its table; blocks before it stay applied.
func TestFakeRestorerTransactions(t *testing.T) {
	f := NewFakeRestorer()
	if err := f.Restore(t.Context(), []byte("*filter\n:SY-A - [0:0]\n-A SY-A -j ACCEPT\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	before, _ := f.Save(t.Context(), "filter")
	err := f.Restore(t.Context(), []byte("*nat\n:SY-N - [0:0]\nCOMMIT\n*filter\n:SY-A - [0:0]\n:SY-B - [0:0]\n-A SY-A -j SY-B\n-A SY-B -j SY-NOPE\nCOMMIT\n"))
	var re *RestoreError
	if !errors.As(err, &re) || re.Line != 8 || re.Text != "-A SY-B -j SY-NOPE" {
		t.Fatalf("error %#v, want line 8 -A SY-B -j SY-NOPE", err)
	}
	if after, _ := f.Save(t.Context(), "filter"); string(after) != string(before) {
		t.Errorf("the failed block changed the filter table:\n%s\nwas\n%s", after, before)
	}
	if _, ok := f.Chains("nat")["SY-N"]; !ok {
		t.Error("the nat block before the failure was not applied")
	}
}

func TestFakeRestorerFailNextAndLines(t *testing.T) {
	f := NewFakeRestorer()
	f.FailNext(2)
	in := []byte("*nat\n:SY-N - [0:0]\n\n-A SY-N -j RETURN\nCOMMIT\n")
	for i := 0; i < 2; i++ {
		if err := f.Restore(t.Context(), in); !errors.Is(err, ErrFakeInjected) {
			t.Fatalf("restore %d: %v, want the injected failure", i, err)
		}
	}
	if _, ok := f.Chains("nat")["SY-N"]; ok {
		t.Fatal("an injected failure applied the input")
	}
	if err := f.Restore(t.Context(), in); err != nil {
		t.Fatalf("third restore: %v", err)
	}
	if err := f.Restore(t.Context(), []byte("*nat\n-A SY-N -j RETURN\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	calls := f.Calls()
	var lines []int
	for _, c := range calls {
		lines = append(lines, c.Lines)
	}
	if want := []int{4, 4, 4, 3}; !reflect.DeepEqual(lines, want) {
		t.Errorf("lines per call %v, want %v", lines, want)
	}
	if f.LastLines() != 3 || string(calls[3].Input) != "*nat\n-A SY-N -j RETURN\nCOMMIT\n" || calls[3].Err != nil {
		t.Errorf("last call %+v", calls[3])
	}
	if got := f.Chains("nat")["SY-N"]; !reflect.DeepEqual(got, []string{"-A SY-N -j RETURN", "-A SY-N -j RETURN"}) {
		t.Errorf("SY-N = %q", got)
	}
}

func TestFakeRestorerSave(t *testing.T) {
	f := NewFakeRestorer()
	in := "*nat\n:SY-B - [0:0]\n:SY-A - [0:0]\n-A SY-B   -m comment --comment \"x  y\" -j RETURN\n-A POSTROUTING -j SY-A\n-A SY-A -j SY-B\nCOMMIT\n"
	if err := f.Restore(t.Context(), []byte(in)); err != nil {
		t.Fatal(err)
	}
	got, err := f.Save(t.Context(), "nat")
	if err != nil {
		t.Fatal(err)
	}
	want := `# Generated by fake-iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:SY-A - [0:0]
:SY-B - [0:0]
-A POSTROUTING -j SY-A
-A SY-A -j SY-B
-A SY-B -m comment --comment "x  y" -j RETURN
COMMIT
# Completed by fake-iptables-save
`
	if string(got) != want {
		t.Errorf("Save:\n%s\nwant\n%s", got, want)
	}
	chains, err := ParseSave(got, "nat")
	if err != nil || !reflect.DeepEqual(chains, f.Chains("nat")) {
		t.Errorf("ParseSave(Save) = %q, %v; Chains = %q", chains, err, f.Chains("nat"))
	}
	if _, err := f.Save(t.Context(), "bogus"); err == nil {
		t.Error("Save of an unknown table: no error")
	}
	if f.Chains("bogus") != nil {
		t.Error("Chains of an unknown table")
	}
}

// Outside the steps: what else the fake refuses, with the line it blames.
func TestFakeRestorerRefusals(t *testing.T) {
	for _, c := range []struct{ name, input string }{
		{"outside a table", ":SY-A - [0:0]\n"},
		{"nested table", "*filter\n*nat\nCOMMIT\n"},
		{"unknown command", "*filter\n-Z INPUT\nCOMMIT\n"},
		{"policy on a user chain", "*filter\n:SY-A ACCEPT [0:0]\nCOMMIT\n"},
		{"bad policy", "*filter\n:INPUT REJECT [0:0]\nCOMMIT\n"},
		{"two targets", "*filter\n-A INPUT -j ACCEPT -j DROP\nCOMMIT\n"},
		{"target missing", "*filter\n-A INPUT -j\nCOMMIT\n"},
		{"jump to a built-in chain", "*filter\n-A INPUT -j OUTPUT\nCOMMIT\n"},
		{"delete a built-in chain", "*filter\n-X INPUT\nCOMMIT\n"},
		{"unterminated quote", "*filter\n-A INPUT -m comment --comment \"x -j ACCEPT\nCOMMIT\n"},
		{"insert too far", "*filter\n-I INPUT 2 -j ACCEPT\nCOMMIT\n"},
		{"delete too far", "*filter\n-D INPUT 1\nCOMMIT\n"},
		{"a chain named like a target", "*filter\n:DROP - [0:0]\nCOMMIT\n"},
	} {
		f := NewFakeRestorer()
		err := f.Restore(t.Context(), []byte(c.input))
		var re *RestoreError
		if !errors.As(err, &re) || re.Line == 0 || re.Message == "" {
			t.Errorf("%s: error %#v, want a RestoreError with a line", c.name, err)
		}
	}
}

// A restore whose context is done fails with the context's error and changes
// nothing, like the real tool stopped before its COMMIT; OnRestore holds one in
// flight until the test lets it go.
func TestFakeRestorerHonoursTheContext(t *testing.T) {
	f := NewFakeRestorer()
	in := []byte("*nat\n:SY-N - [0:0]\n-A SY-N -j RETURN\nCOMMIT\n")
	held := make(chan struct{})
	f.OnRestore(func(ctx context.Context) {
		close(held)
		<-ctx.Done()
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Restore(ctx, in) }()
	<-held
	cancel()
	var re *RestoreError
	if err := <-done; !errors.Is(err, context.Canceled) || !errors.As(err, &re) {
		t.Errorf("Restore = %v, want a *RestoreError wrapping context.Canceled", err)
	}
	if _, ok := f.Chains("nat")["SY-N"]; ok {
		t.Error("a canceled restore applied its input")
	}
	if calls := f.Calls(); len(calls) != 1 || !errors.Is(calls[0].Err, context.Canceled) {
		t.Errorf("calls %+v", calls)
	}
	f.OnRestore(nil)
	for name, call := range map[string]func() error{
		"Save":         func() error { _, err := f.Save(ctx, "nat"); return err },
		"ChainNames":   func() error { _, err := f.ChainNames(ctx, "nat"); return err },
		"DeleteChains": func() error { return f.DeleteChains(ctx, "nat", []string{"SY-N"}) },
	} {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context = %v", name, err)
		}
	}
}
