package iptables

import (
	"fmt"

	goipt "github.com/coreos/go-iptables/iptables"

	"github.com/switchyard/switchyard/dataplane"
)

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
