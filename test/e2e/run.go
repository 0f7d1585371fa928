package e2e

import (
	"context"
	"fmt"
	"time"

	"github.com/switchyard/switchyard/test/cluster"
)

// Options configure Run.
type Options struct {
	// Proxy is what to install (Proxies): Switchyard with deploy/overlays/ebpf or
	// iptables, or upstream kube-proxy (nftables or iptables mode) from its image, as
	// kubeadm deploys it: the same checks hold for both.
	Proxy string
	// Repo is the repository's root (deploy/overlays is found there).
	Repo string
	// Images are the image archives to load into the nodes (switchyard, test pods, pause).
	Images []string
	// Probe is a static build of test/cmd/probe, run inside pods, nodes and clients.
	Probe string
	// Loadgen is a static build of test/cmd/loadgen, run the same way (Handover's
	// load).
	Loadgen string
	// Short runs one check of each kind, for make test.
	Short bool
	// Logf gets progress lines; Report gets each check's result as it ends.
	Logf   func(format string, args ...any)
	Report func(Result)
}

// Result is the outcome of one check.
type Result struct {
	Name string
	Err  error
	Took time.Duration
}

// Run starts a two-node cluster, installs Switchyard with the overlay, deploys the
// workloads and runs the checks. The returned error is a failure before any check
// could run (the cluster, the install, the workloads); the cluster is gone when Run
// returns.
func Run(ctx context.Context, o Options) ([]Result, error) {
	p, err := proxyNamed(o.Proxy)
	if err != nil {
		return nil, err
	}
	return withCluster(ctx, o, func(c *cluster.Cluster) ([]Result, error) {
		return run(ctx, &env{c: c, o: o, p: p, cs: c.Client()})
	})
}

// withCluster starts the two-node cluster every run uses, runs fn on it and closes
// it; failing to close is the error when fn had none.
func withCluster[T any](ctx context.Context, o Options, fn func(*cluster.Cluster) (T, error)) (out T, err error) {
	c, err := cluster.Start(ctx, cluster.Options{Nodes: 2, ExternalClients: 2, Images: o.Images, Logf: o.Logf})
	if err != nil {
		return out, err
	}
	defer func() {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing the cluster: %w", cerr)
		}
	}()
	return fn(c)
}

func run(ctx context.Context, e *env) (results []Result, err error) {
	o, p := e.o, e.p
	start := time.Now()
	if err := e.install(ctx); err != nil {
		return nil, e.withLogs(ctx, fmt.Errorf("installing %s: %w", o.Proxy, err))
	}
	o.Logf("%s: DaemonSet pods Ready and /healthz 200 on every node %s after applying it", p.app, time.Since(start).Round(time.Millisecond))
	if err := e.deploy(ctx, e.checkWorkloads()); err != nil {
		return nil, e.withLogs(ctx, fmt.Errorf("deploying the workloads: %w", err))
	}
	for _, ch := range e.checks() {
		if o.Short && !ch.short {
			continue
		}
		t0 := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		r := Result{Name: o.Proxy + "/" + ch.name, Err: ch.run(cctx), Took: time.Since(t0)}
		cancel()
		if o.Report != nil {
			o.Report(r)
		}
		results = append(results, r)
	}
	if failed(results) {
		o.Logf("%s", e.agentLogs(ctx))
	}
	return results, nil
}

func failed(rs []Result) bool {
	for _, r := range rs {
		if r.Err != nil {
			return true
		}
	}
	return false
}
