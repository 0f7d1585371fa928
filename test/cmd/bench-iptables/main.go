// Command bench-iptables compares upstream kube-proxy's iptables mode with
// Switchyard's (--mode=iptables) in one run, both fed by the same real
// kube-apiserver (test/controlplane), at each size of -services ClusterIP
// services x -endpoints endpoints.
//
//	go run ./test/cmd/bench-iptables [-services 1000,10000] [-endpoints 10] [-changes 10]
//	    [-proxies kube-proxy-iptables,switchyard-iptables] [-cold-timeout 20m] [-change-timeout 2m]
//	    [-pause 2s] [-writers 8] [-json FILE] [-agent BIN]
//
// It reports, per proxy and size: the cold start (process start to the end of
// the sync after which the nat table dispatches to every service); -changes
// changes written through client-go one after another, each once the proxy's
// last sync is -pause old (even ones replace an endpoint in a service's
// EndpointSlice, odd ones create a Service whose slice was written a pause
// earlier), each timed from the write to its rules in the kernel: the service's
// jump to the new endpoint's chain and its DNAT, or the new cluster IP's
// dispatch rule and its jump to an endpoint, read with `iptables -t nat -S CHAIN`
// (chain names hashed as kube-proxy does; in the variant the proxy wrote, nft
// or else legacy) inside the node namespace; then a connection from a pod to
// every created service, which must reach the pod behind all its endpoint
// addresses; and the proxy's RSS after the cold start, after the changes and at
// its peak.
//
// Run it as root from the repository root; the control-plane binaries come from
// `make controlplane`. The sizes are measured in ascending order: the services
// are written once (by -writers in parallel: about a minute for 10,000) and
// grown for the next size. At each size the proxies run one after the other,
// each in a fresh topology (test/topology), against the same API server contents: the changes are reverted after each proxy. A proxy that
// does not finish its cold start within -cold-timeout is reported as such (its
// changes are skipped) and the others are still measured; a proxy that fails
// gets an error row and the exit status is 1. Speed is reported, never judged.
// Everything (proxies, namespaces, cgroups, the control plane, files) is removed
// at the end, on failure and on SIGINT.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/switchyard/switchyard/test/controlplane"
	"github.com/switchyard/switchyard/test/flowrun"
	"github.com/switchyard/switchyard/test/topology"
)

var allProxies = []string{"kube-proxy-iptables", "switchyard-iptables"}

type options struct {
	sizes                             []int
	endpoints, changes, writers       int
	proxies                           []string
	coldTimeout, changeTimeout, pause time.Duration
	jsonOut, agentBin                 string
}

func main() {
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-iptables:", err)
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
		fmt.Fprintln(os.Stderr, "bench-iptables:", err)
		os.Exit(1)
	}
	if rep.failed() {
		os.Exit(1)
	}
}

func parseFlags() (options, error) {
	var o options
	sizes := flag.String("services", "1000,10000", "sizes: ClusterIP services (port 80/TCP), comma-separated")
	proxies := flag.String("proxies", strings.Join(allProxies, ","), "proxies to measure at each size, in this order")
	flag.IntVar(&o.endpoints, "endpoints", 10, "endpoints per service (one EndpointSlice each; 1-250)")
	flag.IntVar(&o.changes, "changes", 10, "changes after the cold start: endpoint replacements and Service creations, alternating")
	flag.IntVar(&o.writers, "writers", 8, "parallel API writers when publishing the services")
	flag.DurationVar(&o.coldTimeout, "cold-timeout", 20*time.Minute, "report a cold start that takes longer as not finished")
	flag.DurationVar(&o.changeTimeout, "change-timeout", 2*time.Minute, "give up on one change after this long")
	flag.DurationVar(&o.pause, "pause", 2*time.Second, "before each change, since the proxy's last sync (more than the proxies' 1 s --min-sync-period)")
	flag.StringVar(&o.jsonOut, "json", "", "also write the report as JSON to this file")
	flag.StringVar(&o.agentBin, "agent", "", "run this Switchyard binary instead of building ./cmd/switchyard")
	flag.Parse()
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 40000 {
			return o, fmt.Errorf("-services: %q is not a size in 1..40000", f)
		}
		if !slices.Contains(o.sizes, n) {
			o.sizes = append(o.sizes, n)
		}
	}
	slices.Sort(o.sizes)
	for _, p := range strings.Split(*proxies, ",") {
		if p = strings.TrimSpace(p); !slices.Contains(allProxies, p) || slices.Contains(o.proxies, p) {
			return o, fmt.Errorf("-proxies: %q unknown or repeated (want some of %s)", p, strings.Join(allProxies, ","))
		}
		o.proxies = append(o.proxies, p)
	}
	if flag.NArg() > 0 || o.endpoints < 1 || o.endpoints > 250 || o.changes < 0 || o.changes > 10000 || o.writers < 1 ||
		o.coldTimeout <= 0 || o.changeTimeout <= 0 || o.pause < 0 {
		return o, errors.New("bad -endpoints, -changes, -writers, a timeout, -pause or extra arguments")
	}
	if slices.Max(o.sizes)*o.endpoints >= 1<<23 {
		return o, errors.New("-services x -endpoints must stay below 2^23 (endpoint addresses come from 10.0.0.0/9)")
	}
	return o, nil
}

// env is what the measurements share.
type env struct {
	o                           options
	tmp                         string
	echoBin, probeBin, agentBin string
	cp                          *controlplane.ControlPlane
	cl                          *cluster
}

func run(ctx context.Context, o options) (rep *report, err error) {
	if err := topology.Prerequisites(); err != nil {
		return nil, err
	}
	bin := controlplane.BinDir()
	if missing := controlplane.Missing(bin); len(missing) > 0 {
		return nil, fmt.Errorf("control-plane binaries missing in %s (%s): run `make controlplane`", bin, strings.Join(missing, ", "))
	}
	e := &env{o: o}
	if e.tmp, err = os.MkdirTemp("", "bench-iptables-"); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(e.tmp)) }()
	fmt.Fprintln(os.Stderr, "building the echo server, the probe and the agent")
	if e.echoBin, e.probeBin, err = topology.BuildBinaries(ctx, e.tmp); err != nil {
		return nil, err
	}
	if e.agentBin = o.agentBin; e.agentBin == "" {
		e.agentBin, err = flowrun.BuildAgent(ctx, e.tmp)
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(os.Stderr, "starting etcd and kube-apiserver")
	if e.cp, err = controlplane.Start(ctx, controlplane.Options{BinDir: bin}); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.cp.Stop()) }()
	rc := e.cp.RESTConfig()
	rc.QPS, rc.Burst = 5000, 10000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	e.cl = &cluster{cs: cs, endpoints: o.endpoints}
	if err := e.cl.setUp(ctx); err != nil {
		return nil, err
	}
	rep = &report{Endpoints: o.endpoints, Changes: o.changes, Pause: o.pause.Seconds()}
	for _, n := range o.sizes {
		if err := e.cl.grow(ctx, n, o.writers); err != nil {
			return rep, err
		}
		for _, p := range o.proxies {
			if ctx.Err() != nil {
				return rep, errors.New("interrupted")
			}
			fmt.Fprintf(os.Stderr, "%s at %d services\n", p, n)
			res := e.measure(ctx, p, n)
			if res.Error != "" {
				fmt.Fprintf(os.Stderr, "%s at %d services: error: %s\n", p, n, res.Error)
			}
			rep.Results = append(rep.Results, res)
		}
	}
	if ctx.Err() != nil {
		return rep, errors.New("interrupted")
	}
	return rep, nil
}
