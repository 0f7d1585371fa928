package netfilter

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

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
	if err := r.Restore(t.Context(), []byte("*nat\nCOMMIT\n")); err == nil {
		t.Error("Restore with variant auto: no error")
	}
	if _, err := r.Save(t.Context(), "nat"); err == nil {
		t.Error("Save with variant auto: no error")
	}
	if len(s.calls) != 0 {
		t.Errorf("tools ran: %q", s.calls)
	}
}

// A restore whose context ends stops the tool (SIGTERM) and says why: the error
// wraps ctx.Err(), so the sync loop can tell a shutdown from a failure.
func TestRestoreStopsWithTheContext(t *testing.T) {
	tool := func(ctx context.Context, name string, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "sleep", "60") // a restore that takes a minute
	}
	r := NewRestorer(dataplane.IPv4, VariantNFT, tool)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.Restore(ctx, []byte("*nat\nCOMMIT\n"))
	took := time.Since(start)
	var re *RestoreError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &re) {
		t.Errorf("Restore = %v, want a *RestoreError wrapping the context's error", err)
	}
	if took >= killDelay {
		t.Errorf("Restore took %v: the tool was not stopped by SIGTERM", took)
	}
	// A context already done fails at once (exec does not start the tool).
	if err := r.Restore(ctx, []byte("*nat\nCOMMIT\n")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Restore with a done context = %v", err)
	}
	if _, err := r.ChainNames(ctx, "nat"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ChainNames with a done context = %v", err)
	}
}

// A tool that ignores SIGTERM is killed killDelay later.
func TestRestoreKillsAToolThatIgnoresSIGTERM(t *testing.T) {
	tool := func(ctx context.Context, name string, args ...string) *exec.Cmd {
		// An ignored signal stays ignored across exec; no shell stays behind.
		return exec.CommandContext(ctx, "sh", "-c", `trap "" TERM; exec sleep 60`)
	}
	r := NewRestorer(dataplane.IPv4, VariantNFT, tool)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.Restore(ctx, []byte("*nat\nCOMMIT\n"))
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Restore = %v, want the context's error", err)
	}
	if took < killDelay || took > killDelay+5*time.Second {
		t.Errorf("Restore took %v, want about %v (SIGTERM ignored, then SIGKILL)", took, killDelay)
	}
}
