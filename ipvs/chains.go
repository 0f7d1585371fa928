package ipvs

import (
	"fmt"

	"github.com/switchyard/switchyard/netfilter"
)

// IPVS mode needs iptables rules too (kube-proxy's IPVS mode uses ipsets and a
// fixed set of rules; Switchyard renders plain rules per frontend instead, so
// there is no ipset to keep in step, and a partial sync edits only the rules of
// the frontends that changed).
//
// The chains are Switchyard's, under their own prefix: iptables mode deletes
// every SWYD- chain it does not render, and a chain that a built-in chain still
// jumps to cannot be deleted, so the two modes must not share a prefix.
const (
	// Prefix starts every chain of IPVS mode.
	Prefix = "SWYDIPVS-"
	// ChainServices (nat PREROUTING and OUTPUT) marks for masquerade what
	// kube-proxy's IPVS mode masquerades; IPVS translates the packet later, in
	// INPUT (or OUTPUT for the node's own connections).
	ChainServices = Prefix + "SERVICES"
	// ChainPostrouting (nat POSTROUTING) masquerades hairpin connections (a pod
	// reaching itself through a service) and what was marked.
	ChainPostrouting = Prefix + "POSTROUTING"
	ChainMarkMasq    = Prefix + "MARK-MASQ"
	// ChainFilter (filter INPUT, new connections) has one rule per frontend that
	// needs one: REJECT without endpoints, DROP under a Local policy, a goto to the
	// frontend's own chain for source ranges, RETURN for the rest of the device's
	// addresses; whatever no rule matched goes on to ChainUnserved.
	ChainFilter = Prefix + "FILTER"
	// ChainUnserved rejects new connections to the device's addresses on ports no
	// service serves (kube-proxy's KUBE-IPVS-FILTER, kubernetes#72236): the
	// addresses are local, so the node's own servers would answer there.
	ChainUnserved = Prefix + "UNSERVED"
	// ChainNodePorts (filter INPUT) accepts health-check node ports.
	ChainNodePorts = Prefix + "NODE-PORT"
	// ChainForward (filter FORWARD) lets masqueraded traffic through a FORWARD
	// policy that is not ACCEPT.
	ChainForward = Prefix + "FORWARD"
	// ChainLocal (mangle OUTPUT, new connections) drops the node's own connections
	// that must be dropped: it runs before IPVS handles them, which the filter
	// table's OUTPUT chain does not.
	ChainLocal = Prefix + "LOCAL"
	// prefixFW names a frontend's own filter chain (source ranges, or a Local
	// policy that lets only pods in): 12 + 16 characters, the kernel's limit.
	prefixFW = Prefix + "FW-"
)

// tables are the tables IPVS mode writes, in the order a restore writes them.
var tables = []string{"filter", "nat", "mangle"}

// chainSpec is a chain IPVS mode owns: a set of lines the frontends contribute,
// then fixed lines. Set lines never depend on their order (each matches traffic
// no other one matches, or does what the other does), so a partial sync inserts
// them at the top and deletes them one by one, and the tail stays last.
type chainSpec struct {
	table, name string
	tail        []string
}

// fixedChains are the chains every sync has, with their fixed lines (the same
// for both families).
func fixedChains(o Options) []chainSpec {
	mark := masqMark(o.MasqueradeBit)
	return []chainSpec{
		{table: "filter", name: ChainFilter, tail: []string{"-A " + ChainFilter + " -j " + ChainUnserved}},
		{table: "filter", name: ChainUnserved},
		{table: "filter", name: ChainNodePorts},
		{table: "filter", name: ChainForward, tail: []string{
			"-A " + ChainForward + ` -m comment --comment "kubernetes forwarding rules" -m mark --mark ` + mark + "/" + mark + " -j ACCEPT",
			"-A " + ChainForward + ` -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
		}},
		{table: "nat", name: ChainServices},
		{table: "nat", name: ChainPostrouting, tail: []string{
			// Clear the mark so a packet that goes through the stack again is not
			// masqueraded twice.
			"-A " + ChainPostrouting + " -m mark ! --mark " + mark + "/" + mark + " -j RETURN",
			"-A " + ChainPostrouting + " -j MARK --xor-mark " + mark,
			"-A " + ChainPostrouting + ` -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`,
		}},
		{table: "nat", name: ChainMarkMasq, tail: []string{"-A " + ChainMarkMasq + " -j MARK --or-mark " + mark}},
		{table: "mangle", name: ChainLocal},
	}
}

// Jumps are the rules in the built-in chains that lead to IPVS mode's chains,
// inserted at the top of their chains in this order (so the last ends up
// first). They do not depend on the configuration, so a cleanup needs none.
func Jumps() []netfilter.Jump {
	newOnly := []string{"-m", "conntrack", "--ctstate", "NEW"}
	return []netfilter.Jump{
		{Table: "nat", Chain: "OUTPUT", Target: ChainServices, Comment: "kubernetes service portals"},
		{Table: "nat", Chain: "PREROUTING", Target: ChainServices, Comment: "kubernetes service portals"},
		{Table: "nat", Chain: "POSTROUTING", Target: ChainPostrouting, Comment: "kubernetes postrouting rules"},
		{Table: "filter", Chain: "FORWARD", Target: ChainForward, Comment: "kubernetes forwarding rules"},
		{Table: "filter", Chain: "INPUT", Target: ChainNodePorts, Comment: "kubernetes health check rules"},
		{Table: "filter", Chain: "INPUT", Target: ChainFilter, Args: newOnly, Comment: "kubernetes ipvs access filter"},
		{Table: "mangle", Chain: "OUTPUT", Target: ChainLocal, Args: newOnly, Comment: "kubernetes ipvs local access filter"},
	}
}

func masqMark(bit int) string { return fmt.Sprintf("%#08x", 1<<uint(bit)) }
