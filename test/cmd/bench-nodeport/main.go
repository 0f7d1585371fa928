// Command bench-nodeport measures the throughput an external client gets to a
// NodePort service, in one run, through each of:
//
//	direct               straight to the pods (their IPs, no proxy): the baseline
//	kube-proxy-nftables  upstream kube-proxy v1.37.2 in nftables mode
//	switchyard-ebpf      the Switchyard agent in eBPF mode (--source=file)
//
//	go run ./test/cmd/bench-nodeport [-targets direct,kube-proxy-nftables,switchyard-ebpf]
//	    [-shapes conn,persistent,udp] [-duration 5s] [-workers 4] [-pods 2] [-rounds 1] [-json FILE] [-agent BIN]
//
// Run it as root from the repository root. Each target gets a fresh topology
// (test/topology): one node with -pods pods behind a NodePort service
// (externalTrafficPolicy Cluster, so the proxies masquerade), and one external
// client on the outside segment. The pods run the echo server's request/reply
// mode (test/cmd/echo -tcp-rr) and its UDP port (-udp), each behind a port of the
// service; the load generator (test/cmd/loadgen) runs as a subprocess inside the
// client's namespace, for -duration per shape: conn (a new TCP connection per
// request: connect, send a line, read the reply, close), persistent (-workers
// connections, request after request) and udp (a new UDP socket per request: a
// datagram each way, through the service's UDP port). Each target is first
// checked with short runs (TCP, and UDP when measured) that must get every
// request answered. With -rounds N the targets are measured N times in turn,
// every other round in reverse order (a fresh topology each time), and the
// median is reported, with the spread.
//
// It prints a table (requests per second, the ratio to the direct path, latency,
// errors, the pods reached and the client address the pods saw) and, with -json,
// writes the same as JSON. A target that cannot be measured gets the row
// "TARGET: error: ..." and the others are still measured; the exit status is
// then 1. Speed is reported, never judged. Everything (processes, namespaces,
// cgroups, pins, the control plane) is removed at the end, on failure and on
// SIGINT.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/controlplane"
	"github.com/switchyard/switchyard/test/flowrun"
	"github.com/switchyard/switchyard/test/topology"
)

var (
	allTargets = []string{"direct", "kube-proxy-nftables", "switchyard-ebpf"}
	allShapes  = []string{"conn", "persistent", "udp"}
)

type options struct {
	targets, shapes []string
	duration        time.Duration
	timeout         time.Duration
	workers, pods   int
	rounds          int
	jsonOut         string
	agentBin        string
}

func main() {
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-nodeport:", err)
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop() // kept until the end: a second ^C must not cut the cleanup short
	rep, err := run(ctx, o)
	if rep != nil {
		rep.print(os.Stdout)
		if o.jsonOut != "" {
			data, _ := json.MarshalIndent(rep, "", "  ")
			err = errors.Join(err, os.WriteFile(o.jsonOut, append(data, '\n'), 0o644))
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-nodeport:", err)
		os.Exit(1)
	}
	if rep.failed() {
		os.Exit(1)
	}
}

func parseFlags() (options, error) {
	var o options
	targets := flag.String("targets", strings.Join(allTargets, ","), "targets to measure, in this order")
	shapes := flag.String("shapes", strings.Join(allShapes, ","), "conn (a new connection per request), persistent, udp (a new UDP socket per request)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "load per target and shape")
	flag.DurationVar(&o.timeout, "timeout", time.Second, "per request; a slower one counts as an error")
	flag.IntVar(&o.workers, "workers", 4, "concurrent connections of the load generator")
	flag.IntVar(&o.pods, "pods", 2, "pods behind the service (1-9)")
	flag.IntVar(&o.rounds, "rounds", 1, "measure every target this many times (in turn) and report the median")
	flag.StringVar(&o.jsonOut, "json", "", "also write the report as JSON to this file")
	flag.StringVar(&o.agentBin, "agent", "", "switchyard-ebpf: run this Switchyard binary instead of building ./cmd/switchyard")
	flag.Parse()
	var err error
	if o.targets, err = list(*targets, allTargets); err != nil {
		return o, fmt.Errorf("-targets: %w", err)
	}
	if o.shapes, err = list(*shapes, allShapes); err != nil {
		return o, fmt.Errorf("-shapes: %w", err)
	}
	if flag.NArg() > 0 || o.duration <= 0 || o.timeout <= 0 || o.workers < 1 || o.pods < 1 || o.pods > 9 || o.rounds < 1 {
		return o, errors.New("bad -duration, -timeout, -workers, -pods, -rounds or extra arguments")
	}
	return o, nil
}

// list splits a comma-separated flag whose items must come from known.
func list(s string, known []string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if !slices.Contains(known, f) || slices.Contains(out, f) {
			return nil, fmt.Errorf("%q: unknown or repeated (want some of %s)", f, strings.Join(known, ","))
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, errors.New("empty")
	}
	return out, nil
}

// env is what the targets share: the helper binaries, and the control plane and
// agent, made when a target first needs them.
type env struct {
	o                   options
	tmp                 string
	echoBin, loadgenBin string

	cp                 *controlplane.ControlPlane
	cpErr              error
	agentBin           string
	agentErr           error
	cpTried, agentDone bool
}

const loadgenPkg = "github.com/switchyard/switchyard/test/cmd/loadgen"

func run(ctx context.Context, o options) (rep *report, err error) {
	if err := topology.Prerequisites(); err != nil {
		return nil, err
	}
	e := &env{o: o}
	if e.tmp, err = os.MkdirTemp("", "bench-nodeport-"); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(e.tmp)) }()
	defer func() { err = errors.Join(err, e.close()) }()
	fmt.Fprintln(os.Stderr, "building the echo server and the load generator")
	if e.echoBin, _, err = topology.BuildBinaries(ctx, e.tmp); err != nil {
		return nil, err
	}
	e.loadgenBin = filepath.Join(e.tmp, "loadgen")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", e.loadgenBin, loadgenPkg).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", loadgenPkg, err, out)
	}
	rep = &report{Pods: o.pods, Workers: o.workers, Duration: o.duration.Seconds(), Rounds: o.rounds}
	for _, t := range o.targets {
		rep.Targets = append(rep.Targets, targetReport{Target: t})
	}
	// Round after round through the targets, so that what else loads the machine
	// meanwhile weighs on all of them alike, every other round in reverse: with a
	// fixed order, 60 s rounds on this 2-core machine moved by up to 20% with
	// their place in it, and not always the same way; reversed, each target runs
	// first as often as the others.
	for r := 1; r <= o.rounds && ctx.Err() == nil; r++ {
		for _, i := range roundOrder(len(rep.Targets), r) {
			tr := &rep.Targets[i]
			if tr.Error != "" || ctx.Err() != nil {
				continue // a target that failed once is not retried
			}
			fmt.Fprintf(os.Stderr, "round %d/%d: %s\n", r, o.rounds, tr.Target)
			if runTarget(ctx, e, tr); tr.Error != "" {
				fmt.Fprintf(os.Stderr, "%s: error: %s\n", tr.Target, tr.Error)
			}
		}
	}
	rep.summarize()
	if ctx.Err() != nil {
		return rep, errors.New("interrupted")
	}
	return rep, nil
}

// roundOrder is the order of n targets in round r (from 1): as given, reversed in
// even rounds.
func roundOrder(n, r int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
		if r%2 == 0 {
			order[i] = n - 1 - i
		}
	}
	return order
}

func (e *env) controlPlane(ctx context.Context) (*controlplane.ControlPlane, error) {
	if !e.cpTried {
		e.cpTried = true
		bin := controlplane.BinDir()
		if missing := controlplane.Missing(bin); len(missing) > 0 {
			e.cpErr = fmt.Errorf("control-plane binaries missing in %s (%s): run `make controlplane`", bin, strings.Join(missing, ", "))
		} else {
			fmt.Fprintln(os.Stderr, "starting etcd and kube-apiserver")
			e.cp, e.cpErr = controlplane.Start(ctx, controlplane.Options{BinDir: bin})
		}
	}
	return e.cp, e.cpErr
}

func (e *env) agent(ctx context.Context) (string, error) {
	if !e.agentDone && e.o.agentBin != "" {
		e.agentDone = true
		e.agentBin, e.agentErr = filepath.Abs(e.o.agentBin)
	}
	if !e.agentDone {
		e.agentDone = true
		fmt.Fprintln(os.Stderr, "building the agent")
		e.agentBin, e.agentErr = flowrun.BuildAgent(ctx, e.tmp)
	}
	return e.agentBin, e.agentErr
}

func (e *env) close() error {
	if e.cp == nil {
		return nil
	}
	return e.cp.Stop()
}
