package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/flowrun"
	"github.com/switchyard/switchyard/test/topology"
)

// node is one proxy running in a fresh topology. Everything it reads, it reads
// inside the node namespace: metrics with curl, rules with iptables.
type node struct {
	topo *topology.Topology
	p    *flowrun.Proxy
	// chains is the proxy's chain prefix: KUBE- or SWYD-.
	chains string
	// variant is where its rules are, "nft" or "legacy", once seen.
	variant string
	polls   []float64 // how long each change's rule check took, seconds
}

// counts lists chains of the nat table one at a time (iptables -t nat -S CHAIN:
// cheap even when the table is large) with a variant's iptables, and counts in
// each the rules that contain the check's text. A chain that is not there
// counts 0.
func (n *node) counts(ctx context.Context, variant string, checks []ruleCheck) ([]int, error) {
	const script = `ipt=$1; shift; while [ $# -gt 0 ]; do ` +
		`c=$("$ipt" -w 5 -t nat -S "$1" 2>/dev/null | grep -c -F -e "$2"); echo "${c:-0}"; shift 2; done`
	args := []string{"-c", script, "bash", "iptables-" + variant}
	for _, c := range checks {
		args = append(args, c.chain, c.text)
	}
	out, err := n.bash(ctx, args...)
	if err != nil {
		return nil, err
	}
	var cs []int
	for _, f := range strings.Fields(out) {
		c, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("rule check: unexpected output %q", out)
		}
		cs = append(cs, c)
	}
	if len(cs) != len(checks) {
		return nil, fmt.Errorf("rule check: unexpected output %q", out)
	}
	return cs, nil
}

// has reports whether every check holds.
func (n *node) has(ctx context.Context, checks []ruleCheck) (bool, error) {
	t0 := time.Now()
	cs, err := n.counts(ctx, n.variant, checks)
	n.polls = append(n.polls, time.Since(t0).Seconds())
	if err != nil {
		return false, err
	}
	return !slices.Contains(cs, 0), nil
}

// services counts the dispatch rules of the proxy's SERVICES chain. Until the
// chain is found, it looks in nft first, then in legacy: legacy is only read
// whole, as asking it for a table would create the table there too.
func (n *node) services(ctx context.Context) (int, error) {
	chain := n.chains + "SERVICES"
	check := []ruleCheck{{chain, "-A " + chain + " -d "}}
	if n.variant == "" {
		cs, err := n.counts(ctx, "nft", check)
		if err != nil {
			return 0, err
		}
		if cs[0] > 0 {
			n.variant = "nft"
			return cs[0], nil
		}
		out, err := n.bash(ctx, "-c", `iptables-legacy-save 2>/dev/null | grep -c -F -e "$1"; true`, "bash", ":"+chain+" ")
		if err != nil || strings.TrimSpace(out) == "0" {
			return 0, err
		}
		n.variant = "legacy"
	}
	cs, err := n.counts(ctx, n.variant, check)
	if err != nil {
		return 0, err
	}
	return cs[0], nil
}

// bash runs bash in the node namespace as a process group of its own, so that
// a cancelled ctx ends the whole pipeline at once, not only bash.
func (n *node) bash(ctx context.Context, args ...string) (string, error) {
	cmd := n.topo.CommandContext(ctx, n.topo.NodeNS(), "bash", args...)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("in %s: bash %s: %w: %s", n.topo.NodeNS(), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// metrics scrapes the proxy's /metrics (127.0.0.1:10249 in the node namespace).
// Keys are the sample names with their labels as printed.
func (n *node) metrics(ctx context.Context) (map[string]float64, error) {
	out, err := n.topo.Run(ctx, n.topo.NodeNS(), "curl", "-sf", "--max-time", "10", "http://127.0.0.1:10249/metrics")
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				m[line[:i]] = v
			}
		}
	}
	return m, nil
}

// metric is the IPv4 proxier's sample (kube-proxy labels them by family) or the
// unlabelled one.
func metric(m map[string]float64, name string) float64 {
	if v, ok := m[name+`{ip_family="IPv4"}`]; ok {
		return v
	}
	return m[name]
}

// memory is the proxy's VmRSS and VmHWM (peak) in MiB.
func (n *node) memory() (rss, peak float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", n.p.Cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == "Name:" && fs[1] == "nsenter" {
			return 0, 0, fmt.Errorf("pid %d is still nsenter", n.p.Cmd.Process.Pid)
		}
		if len(fs) != 3 || fs[2] != "kB" {
			continue
		}
		kb, _ := strconv.ParseFloat(fs[1], 64)
		switch fs[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak, sc.Err()
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
