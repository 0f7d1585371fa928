package netfilter

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"

	goipt "github.com/coreos/go-iptables/iptables"

	"github.com/switchyard/switchyard/dataplane"
)

// Jumper installs and removes the rules in the built-in chains that lead to
// Switchyard's (single-rule operations: -C, -I, -D), for one family.
type Jumper interface {
	// Ensure puts the jump first in its chain unless it is there already.
	Ensure(j Jump) error
	// Remove deletes the jump if it is there.
	Remove(j Jump) error
}

// Jump is a rule in a built-in chain that leads to one of Switchyard's chains. The
// backend inserts each at the top of its chain when missing, in order (kube-proxy's
// EnsureRule(Prepend, ...)), so on a fresh chain the last one ends up first.
type Jump struct {
	Table, Chain, Target string
	Args                 []string
	Comment              string
}

// RuleSpec is the rule as go-iptables takes it (arguments, no quoting).
func (j Jump) RuleSpec() []string {
	spec := append([]string{}, j.Args...)
	if j.Comment != "" {
		spec = append(spec, "-m", "comment", "--comment", j.Comment)
	}
	return append(spec, "-j", j.Target)
}

// Comment quotes as kube-proxy does: only when there is a space. Names come from
// manifests too, so quotes and line breaks are dropped rather than trusted.
func Comment(s string) []string {
	if strings.ContainsAny(s, "\"\n\r\\") {
		s = strings.Map(func(r rune) rune {
			if r == '"' || r == '\n' || r == '\r' || r == '\\' {
				return -1
			}
			return r
		}, s)
	}
	if strings.Contains(s, " ") || s == "" {
		s = `"` + s + `"`
	}
	return []string{"-m", "comment", "--comment", s}
}

// ChainHash is kube-proxy's suffix for per-service and per-endpoint chain names:
// the first 16 base32 characters of the SHA-256 of s.
func ChainHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}

// goJumper makes the single-rule changes with go-iptables, through the
// variant's own binary (iptables-nft, ip6tables-legacy, ...).
type goJumper struct{ ipt *goipt.IPTables }

// NewJumper returns the Jumper of a family and a resolved variant, working in
// the caller's network namespace.
func NewJumper(f dataplane.Family, v Variant) (Jumper, error) {
	restore, err := toolName(f, v, "restore")
	if err != nil {
		return nil, err
	}
	proto := goipt.ProtocolIPv4
	if f == dataplane.IPv6 {
		proto = goipt.ProtocolIPv6
	}
	bin := restore[:len(restore)-len("-restore")]
	ipt, err := goipt.New(goipt.IPFamily(proto), goipt.Path(bin), goipt.Timeout(5))
	if err != nil {
		return nil, fmt.Errorf("iptables: %s: %w", bin, err)
	}
	return goJumper{ipt}, nil
}

// Ensure creates the target chain if needed (kube-proxy's EnsureChain), then
// prepends the jump unless it is there: a jump appended after another
// product's ACCEPT or DROP would never be reached.
func (g goJumper) Ensure(j Jump) error {
	ok, err := g.ipt.ChainExists(j.Table, j.Target)
	if err != nil {
		return err
	}
	if !ok {
		if err := g.ipt.NewChain(j.Table, j.Target); err != nil {
			return err
		}
	}
	if ok, err := g.ipt.Exists(j.Table, j.Chain, j.RuleSpec()...); err != nil || ok {
		return err
	}
	return g.ipt.Insert(j.Table, j.Chain, 1, j.RuleSpec()...)
}

func (g goJumper) Remove(j Jump) error {
	return g.ipt.DeleteIfExists(j.Table, j.Chain, j.RuleSpec()...)
}
