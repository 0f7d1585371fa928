package netfilter

import (
	"context"
	"errors"
	"os/exec"
	"strings"
)

// NATHoldTable is the nftables table HoldNAT creates: one empty nat chain, in the
// inet family so that it holds IPv4 and IPv6 alike.
const NATHoldTable = "switchyard-nat-hold"

// HoldNAT keeps the kernel's NAT hooks registered in the network namespace with an
// empty nat chain of Switchyard's own (eBPF mode has none otherwise). The kernel
// registers those hooks with the first nat chain and removes them with the last,
// and they do two things a handover from kube-proxy needs after kube-proxy's rules
// are gone:
//   - translate every later packet of the connections kube-proxy NATed, whose
//     translation lives on in conntrack (without the hooks such a packet leaves
//     with the ClusterIP or NodePort it was sent to, and the connection breaks);
//   - give a new connection another source port when its reply tuple is that of
//     one of those entries (a socket-LB connection from a port a kube-proxy
//     connection used, still in TIME_WAIT: conntrack drops its SYN otherwise).
//
// It is idempotent; ReleaseNAT removes the chain (switchyard cleanup).
func HoldNAT(ctx context.Context, run Runner) error {
	_, err := run.output(ctx, []byte(natHoldRules), "nft", "-f", "-")
	return err
}

// natHoldRules: "add" leaves an existing table and chain as they are.
const natHoldRules = "add table inet " + NATHoldTable + "\n" +
	"add chain inet " + NATHoldTable + " hold { type nat hook postrouting priority srcnat; policy accept; }\n"

// ReleaseNAT deletes HoldNAT's table; a table that is not there, or no nft on the
// node (nothing can have created it), is no error.
func ReleaseNAT(ctx context.Context, run Runner) error {
	if _, err := exec.LookPath("nft"); err != nil && run == nil {
		return nil
	}
	_, err := run.output(ctx, nil, "nft", "delete", "table", "inet", NATHoldTable)
	var te *toolError
	if errors.As(err, &te) && strings.Contains(te.stderr, "No such file or directory") {
		return nil
	}
	return err
}
