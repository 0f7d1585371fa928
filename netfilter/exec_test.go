package netfilter

import (
	"context"
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
	os.Exit(support.Run(m))
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
