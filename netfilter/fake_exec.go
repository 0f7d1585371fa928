package netfilter

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The commands of a restore block, applied to the FakeRestorer's copy of one table. The errors
// are the kernel's refusals, checked at the line as the real tools do (a jump to a chain that
// is declared only further down fails in both variants).

// fakeKnownTargets are the extension targets the fake accepts besides chains of the table.
var fakeKnownTargets = map[string]bool{
	"ACCEPT": true, "DROP": true, "RETURN": true, "QUEUE": true, "NFQUEUE": true, "REJECT": true,
	"DNAT": true, "SNAT": true, "MASQUERADE": true, "REDIRECT": true, "NETMAP": true,
	"MARK": true, "CONNMARK": true, "LOG": true, "NFLOG": true, "NOTRACK": true, "CT": true,
	"TPROXY": true, "TCPMSS": true, "TRACE": true, "CHECKSUM": true, "DSCP": true, "TOS": true,
	"TTL": true, "HL": true, "SET": true, "CLASSIFY": true, "SECMARK": true, "CONNSECMARK": true,
}

// fakeNATOnlyTargets are refused by the kernel outside the nat table.
var fakeNATOnlyTargets = map[string]bool{"DNAT": true, "SNAT": true, "MASQUERADE": true, "REDIRECT": true, "NETMAP": true}

// fakeMaxChainName is the longest chain name the kernel takes (XT_EXTENSION_MAXNAMELEN - 1).
const fakeMaxChainName = 28

func (t *fakeTable) exec(line string) error {
	fields, err := splitRestoreFields(line)
	if err != nil {
		return err
	}
	if line[0] == ':' {
		return t.declare(fields)
	}
	args := fields[1:]
	switch fields[0].value {
	case "-A", "--append":
		return t.insert(args, false)
	case "-I", "--insert":
		return t.insert(args, true)
	case "-D", "--delete":
		return t.deleteRule(args)
	case "-N", "--new-chain":
		return t.newChain(args)
	case "-X", "--delete-chain":
		return t.deleteChain(args)
	case "-F", "--flush":
		return t.flush(args)
	case "-P", "--policy":
		return t.setPolicy(args)
	}
	return fmt.Errorf("unknown command %q", fields[0].value)
}

// declare is ":CHAIN POLICY [packets:bytes]". Under --noflush a user chain is created, or flushed
// when it exists; a built-in chain only gets its policy (its rules stay).
func (t *fakeTable) declare(fields []restoreField) error {
	if len(fields) < 2 {
		return errors.New("chain declaration without a policy")
	}
	name := fields[0].value[1:]
	if isBuiltinChain(t.name, name) {
		return t.setPolicy([]restoreField{{value: name}, fields[1]})
	}
	if fields[1].value != "-" {
		return fmt.Errorf("chain %s: only built-in chains have a policy", name)
	}
	if err := checkChainName(name); err != nil {
		return err
	}
	t.flushChain(name)
	return nil
}

func checkChainName(name string) error {
	switch {
	case name == "" || strings.HasPrefix(name, "-"):
		return fmt.Errorf("bad chain name %q", name)
	case len(name) > fakeMaxChainName:
		return fmt.Errorf("chain name `%s' too long (must be under %d chars)", name, fakeMaxChainName+1)
	case fakeKnownTargets[name]:
		return fmt.Errorf("chain name %q is a target's", name)
	}
	return nil
}

// insert is -A CHAIN RULE, or -I CHAIN [N] RULE.
func (t *fakeTable) insert(args []restoreField, atPos bool) error {
	chain, err := t.existingChain(args)
	if err != nil {
		return err
	}
	spec, pos := args[1:], len(t.chains[chain])
	if atPos {
		pos = 0
		if n, ok := ruleNumber(spec); ok {
			if n > len(t.chains[chain])+1 {
				return fmt.Errorf("index of insertion too big")
			}
			spec, pos = spec[1:], n-1
		}
	}
	target, err := t.checkTarget(spec)
	if err != nil {
		return err
	}
	t.chains[chain] = slices.Insert(t.chains[chain], pos, fakeRule{line: ruleLine(chain, spec), target: target})
	t.refs[target]++
	return nil
}

// deleteRule is -D CHAIN RULE (the first rule written the same way) or -D CHAIN N.
func (t *fakeTable) deleteRule(args []restoreField) error {
	chain, err := t.existingChain(args)
	if err != nil {
		return err
	}
	rules := t.chains[chain]
	i := -1
	if n, ok := ruleNumber(args[1:]); ok && len(args) == 2 {
		if n > len(rules) {
			return errors.New("index of deletion too big")
		}
		i = n - 1
	} else {
		line := ruleLine(chain, args[1:])
		i = slices.IndexFunc(rules, func(r fakeRule) bool { return r.line == line })
	}
	if i < 0 {
		return errors.New("bad rule (does a matching rule exist in that chain?)")
	}
	t.refs[rules[i].target]--
	t.chains[chain] = slices.Delete(rules, i, i+1)
	return nil
}

func (t *fakeTable) newChain(args []restoreField) error {
	if len(args) != 1 {
		return errors.New("-N wants one chain name")
	}
	name := args[0].value
	if _, ok := t.chains[name]; ok {
		return errors.New("chain already exists")
	}
	if err := checkChainName(name); err != nil {
		return err
	}
	t.flushChain(name)
	return nil
}

// deleteChain is -X CHAIN: the kernel refuses built-in chains, chains with rules and chains that
// a rule jumps to. (-X without a chain is not supported by the fake.)
func (t *fakeTable) deleteChain(args []restoreField) error {
	chain, err := t.existingChain(args)
	if err != nil {
		return err
	}
	switch {
	case len(args) != 1:
		return errors.New("-X wants one chain name")
	case isBuiltinChain(t.name, chain):
		return fmt.Errorf("chain %s is built in", chain)
	case len(t.chains[chain]) > 0:
		return fmt.Errorf("chain %s is not empty (device or resource busy)", chain)
	case t.refs[chain] > 0:
		return fmt.Errorf("chain %s is referenced (device or resource busy)", chain)
	}
	delete(t.chains, chain)
	return nil
}

// flush is -F CHAIN, or -F for every chain of the table.
func (t *fakeTable) flush(args []restoreField) error {
	if len(args) == 0 {
		for c := range t.chains {
			t.flushChain(c)
		}
		return nil
	}
	chain, err := t.existingChain(args)
	if err != nil {
		return err
	}
	t.flushChain(chain)
	return nil
}

// flushChain empties a chain, creating it if needed.
func (t *fakeTable) flushChain(chain string) {
	for _, r := range t.chains[chain] {
		t.refs[r.target]--
	}
	t.chains[chain] = nil
}

func (t *fakeTable) setPolicy(args []restoreField) error {
	if len(args) < 2 || !isBuiltinChain(t.name, args[0].value) {
		return errors.New("a policy needs a built-in chain and ACCEPT or DROP")
	}
	switch p := args[1].value; p {
	case "ACCEPT", "DROP":
		t.policies[args[0].value] = p
		return nil
	default:
		return fmt.Errorf("bad policy %q", p)
	}
}

func (t *fakeTable) existingChain(args []restoreField) (string, error) {
	if len(args) == 0 {
		return "", errors.New("no chain given")
	}
	name := args[0].value
	if _, ok := t.chains[name]; !ok {
		return "", fmt.Errorf("no chain/target/match by that name: chain %q does not exist", name)
	}
	return name, nil
}

// checkTarget refuses what the kernel would: a jump to something that is neither a known target
// nor a user chain of this table (built-in chains cannot be jump targets), a NAT target outside
// the nat table, a goto to a target, or two targets.
// It returns the target ("" for none).
func (t *fakeTable) checkTarget(spec []restoreField) (string, error) {
	target, gotoChain, err := ruleTarget(spec)
	switch {
	case err != nil:
		return "", err
	case target == "":
		return "", nil
	case fakeKnownTargets[target] && gotoChain:
		return "", fmt.Errorf("chain '%s' does not exist (-g needs a chain)", target)
	case fakeNATOnlyTargets[target] && t.name != "nat":
		return "", fmt.Errorf("target %s is only valid in the nat table", target)
	case fakeKnownTargets[target]:
		return target, nil
	case isBuiltinChain(t.name, target):
		return "", fmt.Errorf("cannot jump to built-in chain %s", target)
	}
	if _, ok := t.chains[target]; !ok {
		return "", fmt.Errorf("couldn't load target `%s': no such file or directory", target)
	}
	return target, nil
}

// ruleTarget returns the -j (or -g) target of a rule spec, "" when it has none.
func ruleTarget(spec []restoreField) (target string, gotoChain bool, err error) {
	for i, f := range spec {
		isJump := f.raw == "-j" || f.raw == "--jump"
		isGoto := f.raw == "-g" || f.raw == "--goto"
		if !isJump && !isGoto {
			continue
		}
		switch {
		case target != "":
			return "", false, errors.New("multiple -j or -g flags not allowed")
		case i+1 >= len(spec):
			return "", false, fmt.Errorf("option %s requires an argument", f.raw)
		}
		target, gotoChain = spec[i+1].value, isGoto
	}
	return target, gotoChain, nil
}

// ruleNumber reads a 1-based rule number at the start of spec.
func ruleNumber(spec []restoreField) (int, bool) {
	if len(spec) == 0 {
		return 0, false
	}
	n, err := strconv.Atoi(spec[0].raw)
	return n, err == nil && n >= 1
}

// ruleLine is the stored form of a rule: what iptables-save would print for it, modulo canonical
// spelling of the matches.
func ruleLine(chain string, spec []restoreField) string {
	if len(spec) == 0 {
		return "-A " + chain
	}
	return "-A " + chain + " " + joinRaw(spec)
}
