package topology

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/process"
)

// Command returns a command that runs inside the namespace ns (a name from NodeNS, PodNS ...). When ns
// belongs to a node or its pods, the process is born in that node's cgroup (clone3 with
// CLONE_INTO_CGROUP) before nsenter switches its network namespace, so it is never outside either.
// The command fails to start if ns is not one of the topology's namespaces.
func (t *Topology) Command(ns, name string, args ...string) *exec.Cmd {
	return t.CommandContext(context.Background(), ns, name, args...)
}

// CommandIn is CommandContext bound to ns: a command builder for code that runs
// its tools through one (netfilter.Runner, for one).
func (t *Topology) CommandIn(ns string) func(ctx context.Context, name string, args ...string) *exec.Cmd {
	return func(ctx context.Context, name string, args ...string) *exec.Cmd {
		return t.CommandContext(ctx, ns, name, args...)
	}
}

// CommandContext is Command with a context that kills the process.
func (t *Topology) CommandContext(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	full := append([]string{"--net=" + NetnsPath(ns), "--", name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.ownsLocked(ns) || t.closed {
		cmd.Err = fmt.Errorf("topology %s: %q is not one of its namespaces (or it is closed)", t.Prefix(), ns)
		return cmd
	}
	if cg := t.nsCgroup[ns]; cg != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.dir.Fd())}
	}
	return cmd
}

func (t *Topology) ownsLocked(ns string) bool {
	for _, n := range t.netns {
		if n == ns {
			return true
		}
	}
	return false
}

// Start starts a command from Command and makes it the topology's: Close kills and reaps it. Call
// cmd.Wait yourself only before Close.
func (t *Topology) Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// If the test binary dies, its servers must not live on in the namespaces.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = 5 * time.Second // bounds Close's Wait if a grandchild holds a pipe open
	}
	// Starting under the lock means Close either sees the process or refuses it: none escapes.
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("topology is closed")
	}
	if err := process.StartOnFixedThread(cmd); err != nil {
		return fmt.Errorf("start %s: %w", cmdline(cmd.Path, cmd.Args[1:]), err)
	}
	t.procs = append(t.procs, cmd)
	return nil
}

// Run runs a command inside ns and returns its combined output; the error includes the command line
// and the output.
func (t *Topology) Run(ctx context.Context, ns, name string, args ...string) (string, error) {
	cmd := t.CommandContext(ctx, ns, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", ns, cmdline(name, args), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
