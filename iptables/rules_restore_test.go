package iptables

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/dataplane"
)

// restoreTool returns the iptables-restore of a family, or skips (fails under CI)
// when the test cannot run it: it needs root, unshare and the tool.
func restoreTool(t *testing.T, f dataplane.Family) string {
	t.Helper()
	skip := func(why string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %s", why)
		}
		t.Skip(why)
	}
	if os.Geteuid() != 0 {
		skip("needs root: iptables-restore --test runs in a private network namespace")
	}
	bin := "iptables-restore"
	if f == dataplane.IPv6 {
		bin = "ip6tables-restore"
	}
	for _, b := range []string{bin, "unshare"} {
		if _, err := exec.LookPath(b); err != nil {
			skip(b + " is not installed")
		}
	}
	return bin
}

// restoreTest runs "iptables-restore --test" on the input in a network namespace of
// its own: --test only parses and checks, but nothing can reach the host's rules
// even if it did not.
func restoreTest(bin, input string) error {
	cmd := exec.Command("unshare", "--net", bin, "--test")
	cmd.Stdin = strings.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s --test: %v: %s", bin, err, out)
	}
	return nil
}

func numbered(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		fmt.Fprintf(&b, "%4d %s\n", i+1, l)
	}
	return b.String()
}

// Every scenario's full restore input, with the jumps from the built-in chains, is
// accepted by the real iptables-restore of its family, first with --test (the
// parser and every extension's option checks), then committed in the private
// namespace (the kernel's checks too: jumps to chains that exist, targets in the
// right built-in chains) and read back with iptables-save, chain by chain. The
// namespace, and all it held, goes away with the process; this kernel loads no
// modules, so nothing outside it changes.
func TestIPTablesRestoreAccepts(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			cfg := sc.cfg()
			bin := restoreTool(t, cfg.Family)
			r := render(t, sc.state(t, nil), cfg)
			input := restoreText(r, BaseJumps(cfg))
			if err := restoreTest(bin, input); err != nil {
				t.Fatalf("%v\n%s", err, numbered(input))
			}
			saved, err := restoreCommit(bin, input)
			if err != nil {
				t.Fatalf("%v\n%s", err, numbered(input))
			}
			for tbl, chains := range map[string]Chains{"nat": r.NAT, "filter": r.Filter} {
				for name, rules := range chains {
					if got := len(saved[tbl][name]); got != len(rules) {
						t.Errorf("%s %s: %d rules read back, %d written: %q", tbl, name, got, len(rules), saved[tbl][name])
					}
				}
			}
		})
	}
}

// restoreCommit restores the input in a network namespace of its own and returns
// what iptables-save reads back there.
func restoreCommit(bin, input string) (map[string]map[string][]string, error) {
	save := strings.Replace(bin, "restore", "save", 1)
	cmd := exec.Command("unshare", "--net", "sh", "-c", bin+" && "+save)
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return nil, fmt.Errorf("%s in a new network namespace: %v: %s", bin, err, stderr)
	}
	saved := map[string]map[string][]string{}
	var tbl string
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "*"):
			tbl = l[1:]
			saved[tbl] = map[string][]string{}
		case strings.HasPrefix(l, "-A "):
			chain := strings.Fields(l)[1]
			saved[tbl][chain] = append(saved[tbl][chain], l)
		}
	}
	return saved, nil
}

// The checks above are not vacuous: --test refuses what does not parse, and the
// commit refuses a jump to a chain that does not exist (which --test lets through).
func TestIPTablesRestoreRefusesBadInput(t *testing.T) {
	bin := restoreTool(t, dataplane.IPv4)
	bad := "*nat\n:" + ChainServices + " - [0:0]\n-A " + ChainServices + " -d 10.0.0.1 -d 10.0.0.2 -j RETURN\nCOMMIT\n"
	if err := restoreTest(bin, bad); err == nil {
		t.Errorf("%s --test accepted two -d in one rule", bin)
	}
	dangling := "*nat\n:" + ChainServices + " - [0:0]\n-A " + ChainServices + " -j " + prefixSVC + "MISSING\nCOMMIT\n"
	if _, err := restoreCommit(bin, dangling); err == nil {
		t.Errorf("%s accepted a jump to a chain that does not exist", bin)
	}
}
