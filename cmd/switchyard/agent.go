package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/bpf"
	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/dataplane/healthcheck"
	"github.com/switchyard/switchyard/netfilter"
	"github.com/switchyard/switchyard/watcher"
)

// agent is one running Switchyard: a source feeding a tracker, a runner driving a
// backend, and the health and metrics servers.
type agent struct {
	cfg      *agentConfig
	backend  dataplane.Backend
	tracker  *dataplane.Tracker
	runner   *dataplane.Runner
	health   *healthcheck.ProxyHealth
	services *healthcheck.ServiceHealth
	registry *prometheus.Registry
	problems func(dataplane.ServiceName, []dataplane.Problem)
}

func runAgent(ctx context.Context, cfg *agentConfig, out, log io.Writer) error {
	choice := resolveMode(cfg.mode, ebpfProbe(cfg, bpf.Probe), log)
	mode := choice.mode
	registry := prometheus.NewRegistry()
	choice.register(registry)
	backend, err := newBackend(mode, cfg, out, registry)
	if err != nil {
		return err
	}
	if c, ok := backend.(io.Closer); ok {
		// Only this process's handles: pinned state stays for the next agent.
		defer func() {
			if err := c.Close(); err != nil {
				klog.ErrorS(err, "Closing the dataplane")
			}
		}()
	}
	a := &agent{cfg: cfg, backend: backend, registry: registry}
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.health = healthcheck.NewProxyHealth(2*cfg.syncPeriod, time.Now)
	if mode != "print" {
		// A dry run programs nothing, so it must not tell load balancers to send
		// traffic here either.
		a.services = healthcheck.NewServiceHealth(net.Listen, a.health.IsHealthy)
		defer func() {
			if err := a.services.Close(); err != nil {
				klog.ErrorS(err, "Closing health check node ports")
			}
		}()
	}
	a.problems = logProblems
	a.tracker = dataplane.NewTracker(cfg.model, func() { a.runner.Kick() })
	a.runner = dataplane.NewRunner(backend, a.tracker, dataplane.RunnerConfig{
		MinSyncPeriod: cfg.minSyncPeriodFor(mode), SyncPeriod: cfg.syncPeriod,
		Metrics: dataplane.NewMetrics(a.registry),
		Hooks: dataplane.Hooks{
			Queued:   a.health.QueuedUpdate,
			Synced:   a.synced,
			Problems: func(n dataplane.ServiceName, ps []dataplane.Problem) { a.problems(n, ps) },
		},
	})
	if mode != "print" {
		if err := updateReservedPorts(reservedPortsPath(cfg.procfs), cfg.model.NodePortRange, true); err != nil {
			return err
		}
	}
	if mode == "ebpf" {
		// eBPF mode has no nat chain of its own: without one, the connections kube-proxy
		// NATed lose their translation when its rules go (netfilter.HoldNAT). Not fatal:
		// everything else works without it.
		if err := netfilter.HoldNAT(ctx, nil); err != nil {
			klog.ErrorS(err, "Could not keep the kernel's NAT hooks: connections kube-proxy NATed will break when its rules are removed")
		}
	}
	klog.InfoS("Starting Switchyard", "version", version, "mode", mode, "node", cfg.model.NodeName, "source", sourceName(cfg))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	if err := a.startSource(ctx, g); err != nil {
		return err
	}
	if !cfg.once {
		a.startServers(ctx, g)
	}
	g.Go(func() error {
		err := a.runner.Run(ctx, cfg.once)
		cancel() // with --once the sources and servers stop with the runner
		return err
	})
	return g.Wait()
}

func sourceName(cfg *agentConfig) string {
	if cfg.sourceFile != "" {
		return "file:" + cfg.sourceFile
	}
	return "apiserver"
}

// synced follows every successful sync: health, and the health-check node ports.
func (a *agent) synced(st *dataplane.State) {
	a.health.Updated()
	a.health.SyncNode(st.Node.Eligible)
	if a.services == nil {
		return
	}
	addrs := st.NodePortAddrs(a.cfg.model)
	if a.cfg.model.NodePortAddresses.All() {
		addrs = nil // listen on every address, as kube-proxy does
	}
	if err := a.services.Sync(addrs, healthcheck.FromState(st)); err != nil {
		klog.ErrorS(err, "Some health check node ports could not be served")
	}
}

func (a *agent) startSource(ctx context.Context, g *errgroup.Group) error {
	if a.cfg.sourceFile != "" {
		if a.cfg.once {
			// A dry run cannot wait for someone to fix the manifests.
			if _, err := watcher.Load(a.cfg.sourceFile); err != nil {
				return err
			}
		}
		fs := watcher.NewFileSource(a.cfg.sourceFile, a.cfg.model.NodeName, a.tracker, time.Second)
		g.Go(func() error { return fs.Run(ctx) })
		return nil
	}
	client, err := kubeClient(a.cfg.kubeconfig)
	if err != nil {
		return err
	}
	record, stop := watcher.NewProblemRecorder(client, a.cfg.model.NodeName)
	a.problems = record
	go func() { <-ctx.Done(); stop() }()
	g.Go(func() error {
		return watcher.RunKubernetes(ctx, client, a.cfg.model.NodeName, a.tracker, 15*time.Minute)
	})
	return nil
}

func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("API server configuration (--kubeconfig %q): %w", kubeconfig, err)
	}
	rc.UserAgent = "switchyard/" + version
	rc.QPS, rc.Burst = 50, 100
	return kubernetes.NewForConfig(rc)
}

func (a *agent) startServers(ctx context.Context, g *errgroup.Group) {
	if a.cfg.healthzAddr != "" {
		serve(ctx, g, "healthz", a.cfg.healthzAddr, a.health.Handler())
	}
	if a.cfg.metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
		mux.HandleFunc("/proxyMode", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, a.backend.Name()) })
		mux.Handle("/healthz", a.health.Handler())
		mux.Handle("/livez", a.health.Handler())
		serve(ctx, g, "metrics", a.cfg.metricsAddr, mux)
	}
	if a.services != nil {
		g.Go(func() error { a.retryHealthChecks(ctx, bindRetry); return nil })
	}
	if a.cfg.statusAddr != "" {
		// The same answers as healthz, and the metrics, on an address kube-proxy does
		// not hold: the pod's probes ask this agent, and an operator can watch it,
		// while kube-proxy still answers on 10256 and 10249.
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
		mux.Handle("/healthz", a.health.Handler())
		mux.Handle("/livez", a.health.Handler())
		serve(ctx, g, "status", a.cfg.statusAddr, mux)
	}
}

// retryHealthChecks opens, every interval, the health-check node ports the last
// sync could not (kube-proxy's until it leaves): a load balancer must not see this
// node fail its checks until the next sync.
func (a *agent) retryHealthChecks(ctx context.Context, interval time.Duration) {
	wait.UntilWithContext(ctx, func(context.Context) {
		if !a.services.Pending() {
			return
		}
		opened, err := a.services.Retry()
		for _, n := range opened {
			klog.InfoS("Serving a health check node port now that it is free", "service", n)
		}
		if err != nil {
			klog.V(4).InfoS("Health check node ports still taken", "err", err) // logged by the sync that failed
		}
	}, interval)
}

func logProblems(n dataplane.ServiceName, ps []dataplane.Problem) {
	for _, p := range ps {
		klog.InfoS("Service problem", "service", n, "reason", p.Reason, "message", p.Message)
	}
}
