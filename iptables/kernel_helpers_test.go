package iptables

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/netfilter"
	"github.com/switchyard/switchyard/test/topology"
)

// The kernel tests of this package run inside the namespaces of a simulated node
// built by the topology package; the root namespace is never touched. These
// helpers are small copies of netfilter's test helpers (test code is not
// exported).

// support is set by TestMain: the topology helpers, or why the kernel tests cannot run here.
var support *topology.Support

func TestMain(m *testing.M) {
	support = topology.PrepareTests("root, ip, nsenter and cgroup v2", nil)
	code := m.Run()
	if err := support.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// requireTools checks that the named binaries are installed: it skips the test
// when one is missing, or fails it under CI=true, where that is a broken machine.
func requireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("prerequisite missing: no %s: %v", n, err)
			}
			t.Skipf("prerequisite missing: no %s: %v", n, err)
		}
	}
}

// variantTools are the binaries the Restorer of a variant runs, for both families
// (iptables-<variant>-restore first).
func variantTools(v netfilter.Variant) []string {
	var out []string
	for _, base := range []string{"iptables", "ip6tables"} {
		for _, tool := range []string{"restore", "save"} {
			out = append(out, base+"-"+string(v)+"-"+tool)
		}
	}
	return out
}

// nsRunner runs the tools inside ns, one of topo's namespaces.
func nsRunner(topo *topology.Topology, ns string) netfilter.Runner {
	return func(ctx context.Context, name string, args ...string) *exec.Cmd {
		return topo.CommandContext(ctx, ns, name, args...)
	}
}

// jumpRule is the jump as a restore line, quoted as the rules are (as
// netfilter.FakeJumper writes it).
func jumpRule(j netfilter.Jump) string {
	parts := append([]string{"-A", j.Chain}, j.Args...)
	if j.Comment != "" {
		parts = append(parts, netfilter.Comment(j.Comment)...)
	}
	return strings.Join(append(parts, "-j", j.Target), " ")
}
