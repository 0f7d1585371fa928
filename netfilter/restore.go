package netfilter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard/switchyard/dataplane"
)

// Restorer applies iptables-restore input for one family, atomically per table. Every method
// runs its tool with ctx: when ctx is done the tool is stopped and the error wraps ctx.Err().
type Restorer interface {
	// Restore feeds data (one or more "*table ... COMMIT" blocks) to iptables-restore --noflush
	// (ip6tables-restore for IPv6). Each table block is a transaction of its own: when one fails,
	// the blocks before it stay applied and it and the ones after it are not. The error is a
	// *RestoreError naming the input line the tool blamed, when it named one. A restore stopped
	// through ctx is a failure like any other: the tool applies a table only at its COMMIT (nft:
	// one netlink batch; legacy: one table replace), so each table is as it was or as the input
	// made it, never in between.
	Restore(ctx context.Context, data []byte) error
	// Save returns the current rules of a table (iptables-save -t TABLE), for drift checks and
	// cleanup. The tool prints rules in its canonical form ("-s 10.0.0.1/32", "-p tcp -m tcp"),
	// which may differ from the text that was restored; ParseSave splits it into chains.
	Save(ctx context.Context, table string) ([]byte, error)
	// ChainNames lists the names of a table's user-defined chains, sorted: what cleanup and the
	// search for stale chains need, and cheap where Save is not (see execRestorer.ChainNames).
	// Built-in chains are left out: iptables-nft creates them only when a rule needs them.
	ChainNames(ctx context.Context, table string) ([]string, error)
	// DeleteChains flushes and deletes user-defined chains of a table in one transaction; nothing
	// may jump to them any more.
	DeleteChains(ctx context.Context, table string, chains []string) error
}

const (
	// restoreWaitSeconds bounds the wait for the xtables lock (held by other iptables users on the
	// node, kubelet for one), as kube-proxy's -w 5 does: a sync that cannot get it fails and is
	// retried rather than hanging.
	restoreWaitSeconds = "5"
	// saveTimeout bounds a Save; restores have no timeout of their own, because a large ruleset
	// legitimately takes minutes with iptables-legacy (the caller's ctx stops them).
	saveTimeout = 2 * time.Minute
)

// execRestorer runs the variant's iptables-restore and iptables-save binaries.
type execRestorer struct {
	family  dataplane.Family
	variant Variant
	run     Runner
}

// NewRestorer returns the Restorer for one family that runs the variant's tools (variant must be
// VariantNFT or VariantLegacy: resolve VariantAuto with DetectVariant first; anything else makes
// every call fail). run builds the commands; nil runs them in the caller's network namespace.
func NewRestorer(family dataplane.Family, variant Variant, run Runner) Restorer {
	return &execRestorer{family: family, variant: variant, run: run.orDefault()}
}

func (r *execRestorer) Restore(ctx context.Context, data []byte) error {
	name, err := toolName(r.family, r.variant, "restore")
	if err != nil {
		return err
	}
	// --noflush: only the chains the input declares are flushed; everybody else's rules (and our
	// chains that this input leaves alone, for partial syncs) stay.
	_, err = r.run.output(ctx, data, name, "--wait", restoreWaitSeconds, "--noflush")
	if err != nil {
		return newRestoreError(name, data, err)
	}
	return nil
}

func (r *execRestorer) Save(ctx context.Context, table string) ([]byte, error) {
	if !validTableName(table) {
		return nil, fmt.Errorf("iptables-save: bad table name %q", table)
	}
	name, err := toolName(r.family, r.variant, "save")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, saveTimeout)
	defer cancel()
	return r.run.output(ctx, nil, name, "-t", table)
}

// validTableName keeps a caller's mistake from reaching the tool as an option.
func validTableName(table string) bool {
	_, ok := restoreBuiltinChains[table]
	return ok
}

// RestoreError is a failed iptables-restore run.
type RestoreError struct {
	Tool string // the binary, e.g. iptables-nft-restore
	// Line is the 1-based line of the input that the tool blamed, 0 when it named none. For a
	// rule that only fails in the kernel, iptables-nft blames the table's COMMIT line; the
	// message then says what was wrong.
	Line int
	// Text is that line of the input.
	Text string
	// Message is what the tool printed on stderr, on one line.
	Message string
	// Err is the exit status, or why the tool could not run.
	Err error
}

func (e *RestoreError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s failed at input line %d %q: %s", e.Tool, e.Line, e.Text, e.Message)
	}
	if e.Message == "" {
		return fmt.Sprintf("%s: %v", e.Tool, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Tool, e.Err, e.Message)
}

func (e *RestoreError) Unwrap() error { return e.Err }

// restoreLineRE finds the line number in iptables-restore's complaints, which come in several
// forms across variants: "Error occurred at line: 3" (a parse error), "line 2 failed" (legacy
// commit, nft command), "line 2: CHAIN_DEL failed (Device or resource busy)" (nft kernel error).
var restoreLineRE = regexp.MustCompile(`\bline:? ([0-9]+)\b`)

func newRestoreError(tool string, input []byte, err error) *RestoreError {
	re := &RestoreError{Tool: tool, Err: err}
	var te *toolError
	if errors.As(err, &te) {
		re.Err, re.Message = te.err, oneLine(te.stderr)
	}
	if m := restoreLineRE.FindStringSubmatch(re.Message); m != nil {
		if n, perr := strconv.Atoi(m[1]); perr == nil {
			re.Line, re.Text = n, inputLine(input, n)
		}
	}
	return re
}

// oneLine joins the tool's stderr lines, leaving out the usage hint that follows every error.
func oneLine(stderr string) string {
	var parts []string
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "Try `") {
			continue
		}
		parts = append(parts, l)
	}
	return strings.Join(parts, "; ")
}

// inputLine returns line n (1-based) of data, or "" when there is no such line.
func inputLine(data []byte, n int) string {
	for i := 1; len(data) > 0; i++ {
		line, rest, _ := bytes.Cut(data, []byte("\n"))
		if i == n {
			return string(line)
		}
		data = rest
	}
	return ""
}
