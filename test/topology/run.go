package topology

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// run executes a management command (ip, nsenter ...) and returns its combined output. The error names
// the command and carries its output, since that is usually the only useful diagnostic.
func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", cmdline(name, args), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// runStdout is run for output a program parses: stdout alone. iproute2 writes to stderr about
// namespaces it merely came across (one another run is deleting at that moment) and still exits 0,
// and that text mixed in would break the parse. The error carries stderr.
func runStdout(ctx context.Context, name string, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), errOut.String(), fmt.Errorf("%s: %w: %s", cmdline(name, args), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), errOut.String(), nil
}

// ipIn runs `ip -n ns args...`: every change is made from outside into a namespace of ours, so none
// of it can land in the root namespace by accident.
func ipIn(ctx context.Context, ns string, args ...string) error {
	_, err := run(ctx, "ip", append([]string{"-n", ns}, args...)...)
	return err
}

// ipAll runs several `ip -n ns` commands, stopping at the first failure.
func ipAll(ctx context.Context, ns string, cmds ...[]string) error {
	for _, c := range cmds {
		if err := ipIn(ctx, ns, c...); err != nil {
			return err
		}
	}
	return nil
}

func cmdline(name string, args []string) string {
	return strings.Join(append([]string{name}, args...), " ")
}
