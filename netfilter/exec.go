package netfilter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/dataplane"
)

// Runner builds the command that runs one of the iptables tools. The agent uses ExecRunner (its
// own network namespace); tests pass one that wraps the tool in nsenter for a namespace of theirs,
// so production code has no namespace switch of its own.
type Runner func(ctx context.Context, name string, args ...string) *exec.Cmd

// ExecRunner runs the tool directly, in the caller's network namespace.
func ExecRunner(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

// orDefault lets callers pass a nil Runner for the agent's own namespace.
func (r Runner) orDefault() Runner {
	if r == nil {
		return ExecRunner
	}
	return r
}

// toolError is a tool that failed: the exit status (or why it did not start) and what it said.
type toolError struct {
	cmdline string
	err     error
	stderr  string
}

func (e *toolError) Error() string {
	if e.stderr == "" {
		return fmt.Sprintf("%s: %v", e.cmdline, e.err)
	}
	return fmt.Sprintf("%s: %v: %s", e.cmdline, e.err, e.stderr)
}

func (e *toolError) Unwrap() error { return e.err }

// killDelay is how long a tool gets to end after SIGTERM, when ctx is done, before it is killed.
// The iptables tools die at once (they do not catch SIGTERM); the delay bounds a tool stuck in
// an uninterruptible wait, and a child that keeps our pipes open.
const killDelay = 2 * time.Second

// output runs one tool with stdin (nil: none) and returns its stdout. Stderr is kept apart so that
// warnings on a successful run never end up in the rules we parse. When ctx is done the tool is
// stopped, and the error wraps ctx.Err(): the caller can tell a shutdown from a failure.
func (r Runner) output(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := r.orDefault()(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	stopGently(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &toolError{
			cmdline: strings.Join(append([]string{name}, args...), " "),
			err:     withContextErr(ctx, err),
			stderr:  strings.TrimSpace(stderr.String()),
		}
	}
	return stdout.Bytes(), nil
}

// stopGently makes a command built with a context get SIGTERM when the context is done, and
// SIGKILL killDelay later if it is still there (exec.CommandContext sends SIGKILL at once). A
// command built without a context is left alone: setting Cancel would make it fail to start.
func stopGently(cmd *exec.Cmd) {
	if cmd.Cancel == nil {
		return
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = killDelay
}

// withContextErr makes the error of a tool stopped because ctx is done wrap ctx.Err(): exec
// reports such a tool's death by signal ("signal: terminated"), which says nothing of why.
func withContextErr(ctx context.Context, err error) error {
	cerr := ctx.Err()
	if cerr == nil || errors.Is(err, cerr) {
		return err
	}
	return fmt.Errorf("%w (%v)", cerr, err)
}

// toolName is the binary for a family, variant and tool ("restore" or "save"), e.g.
// ip6tables-legacy-restore. The variant-specific names (rather than the alternatives-managed
// "iptables-restore") make the choice explicit and independent of the host's alternatives.
func toolName(family dataplane.Family, variant Variant, tool string) (string, error) {
	if variant != VariantNFT && variant != VariantLegacy {
		return "", fmt.Errorf("iptables variant %q: want %q or %q (resolve %q with DetectVariant first)",
			variant, VariantNFT, VariantLegacy, VariantAuto)
	}
	base := "iptables"
	switch family {
	case dataplane.IPv4:
	case dataplane.IPv6:
		base = "ip6tables"
	default:
		return "", fmt.Errorf("iptables: unknown IP family %d", family)
	}
	return base + "-" + string(variant) + "-" + tool, nil
}

// VariantTools are the iptables-restore and iptables-save binaries of a resolved
// variant, for both families (iptables-<variant>-restore first).
func VariantTools(v Variant) []string {
	var out []string
	for _, fam := range []dataplane.Family{dataplane.IPv4, dataplane.IPv6} {
		for _, tool := range []string{"restore", "save"} {
			name, _ := toolName(fam, v, tool)
			out = append(out, name)
		}
	}
	return out
}

// EachInstalled calls fn for every family and variant whose tools are installed in
// the caller's network namespace, with the family's Restorer and Jumper: what
// `switchyard cleanup` visits, since nothing of an uninstalled variant can be in
// the kernel. The errors are joined, each naming its variant and family.
func EachInstalled(fn func(f dataplane.Family, r Restorer, j Jumper) error) error {
	var errs []error
	for _, v := range []Variant{VariantNFT, VariantLegacy} {
		for _, f := range []dataplane.Family{dataplane.IPv4, dataplane.IPv6} {
			if !Installed(f, v) {
				continue
			}
			j, err := NewJumper(f, v)
			if err == nil {
				err = fn(f, NewRestorer(f, v, nil), j)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s, %s: %w", v, f, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Installed reports whether the iptables-save of a family and resolved variant is
// on the PATH: without it, nothing of that variant can be in the kernel.
func Installed(family dataplane.Family, variant Variant) bool {
	save, err := toolName(family, variant, "save")
	if err != nil {
		return false
	}
	_, err = exec.LookPath(save)
	return err == nil
}
