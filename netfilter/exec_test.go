package netfilter

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/test/topology"
)

// The kernel tests of this package run every iptables, conntrack and sysctl operation inside the
// namespaces of a simulated node built by the topology package, as subprocesses (nsenter) or on a
// thread verified to be in the node's namespace; a killed run's namespaces are removed by the
// next run of any topology test. The root namespace is never touched.

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

// requirePrereq skips the test when err says something it needs is missing, or fails it under
// CI=true, where a missing prerequisite is a broken machine.
func requirePrereq(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing: %v", err)
	}
	t.Skipf("prerequisite missing: %v", err)
}

// requireTools checks that the named binaries are installed.
func requireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			requirePrereq(t, fmt.Errorf("no %s: %w", n, err))
		}
	}
}

// variantTools are the binaries the Restorer of a variant runs, for both families.
func variantTools(v Variant) []string {
	var out []string
	for _, fam := range []dataplane.Family{dataplane.IPv4, dataplane.IPv6} {
		for _, tool := range []string{"restore", "save"} {
			name, _ := toolName(fam, v, tool)
			out = append(out, name)
		}
	}
	return out
}

// nsRunner runs the tools inside ns, one of topo's namespaces.
func nsRunner(topo *topology.Topology, ns string) Runner {
	return func(ctx context.Context, name string, args ...string) *exec.Cmd {
		return topo.CommandContext(ctx, ns, name, args...)
	}
}

// scriptRunner fakes the tools for unit tests: out maps "name args..." to what the tool prints;
// a command line that is not in it is a tool that is not installed. It records every call.
type scriptRunner struct {
	out   map[string]string
	calls []string
}

func (s *scriptRunner) run(ctx context.Context, name string, args ...string) *exec.Cmd {
	line := strings.Join(append([]string{name}, args...), " ")
	s.calls = append(s.calls, line)
	out, ok := s.out[line]
	if !ok {
		return exec.CommandContext(ctx, "/nonexistent/"+name)
	}
	return exec.CommandContext(ctx, "printf", "%s", out)
}

func TestToolName(t *testing.T) {
	for _, c := range []struct {
		fam  dataplane.Family
		v    Variant
		want string
	}{
		{dataplane.IPv4, VariantNFT, "iptables-nft-restore"},
		{dataplane.IPv6, VariantNFT, "ip6tables-nft-restore"},
		{dataplane.IPv4, VariantLegacy, "iptables-legacy-restore"},
		{dataplane.IPv6, VariantLegacy, "ip6tables-legacy-restore"},
	} {
		got, err := toolName(c.fam, c.v, "restore")
		if err != nil || got != c.want {
			t.Errorf("toolName(%v, %s) = %q, %v; want %q", c.fam, c.v, got, err, c.want)
		}
	}
	for _, v := range []Variant{VariantAuto, "", "iptables"} {
		if _, err := toolName(dataplane.IPv4, v, "restore"); err == nil {
			t.Errorf("toolName with variant %q: no error", v)
		}
	}
	if _, err := toolName(0, VariantNFT, "restore"); err == nil {
		t.Error("toolName with family 0: no error")
	}
}

// An unresolved variant fails every call instead of running some default tool.
func TestRestorerUnresolvedVariant(t *testing.T) {
	s := &scriptRunner{}
	r := NewRestorer(dataplane.IPv4, VariantAuto, s.run)
	if err := r.Restore([]byte("*nat\nCOMMIT\n")); err == nil {
		t.Error("Restore with variant auto: no error")
	}
	if _, err := r.Save("nat"); err == nil {
		t.Error("Save with variant auto: no error")
	}
	if len(s.calls) != 0 {
		t.Errorf("tools ran: %q", s.calls)
	}
}
