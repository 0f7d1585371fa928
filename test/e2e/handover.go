package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/switchyard/switchyard/test/cluster"
)

// HandoverOptions configure Handover.
type HandoverOptions struct {
	// Options.Proxy is Switchyard's overlay that takes over (ebpf, iptables); Images
	// must hold kube-proxy's image too. Options.Short is not used: Settle sets the
	// length.
	Options
	// From is the kube-proxy it takes over from: kube-proxy-nftables or
	// kube-proxy-iptables.
	From string
	// Settle is how long the load runs after each step's action is done (30 s in
	// the long form: long enough for a periodic sync, a conntrack timeout, a
	// rollout's stragglers to show).
	Settle time.Duration
}

// Step is one step of a handover and what every traffic path saw while it ran,
// its action and its settling time.
type Step struct {
	Name   string
	Action time.Duration // how long the action took (the load ran throughout)
	Err    error         // the action failed (later steps did not run)
	Paths  []PathCount
	// Events are the action's stages with when each ended; Logs the proxies'
	// logs at the step's end.
	Events []string
	Logs   string
}

// Failed says what in the step went wrong: its action, or a path that lost a
// request, broke a connection or tried nothing.
func (s Step) Failed() error {
	errs := []error{s.Err}
	for _, p := range s.Paths {
		if p.lost() {
			errs = append(errs, fmt.Errorf("%s: %d tried, %d failed %v, %d broken", p.Path, p.Tried, p.failed(), p.Failed, p.Broken))
		}
	}
	return errors.Join(errs...)
}

// Handover starts a two-node cluster running kube-proxy, puts load on every
// traffic path, and while it runs hands the cluster over to Switchyard, upgrades
// Switchyard, and rolls back to kube-proxy: the steps of docs/migrate.md. It
// returns each step with what each path saw; the error is a failure before the
// load started (the cluster, the installs, the workloads).
func Handover(ctx context.Context, o HandoverOptions) ([]Step, error) {
	kp, err := proxyNamed(o.From)
	if err != nil {
		return nil, err
	}
	sy, err := proxyNamed(o.Proxy)
	if err != nil {
		return nil, err
	}
	if kp.app != "kube-proxy" || sy.app != "switchyard" {
		return nil, fmt.Errorf("a handover goes from kube-proxy (%s) to Switchyard (%s)", o.From, o.Proxy)
	}
	return withCluster(ctx, o.Options, func(c *cluster.Cluster) ([]Step, error) {
		h := &handover{o: o,
			kp: &env{c: c, o: o.Options, p: kp, cs: c.Client()},
			sy: &env{c: c, o: o.Options, p: sy, cs: c.Client()}}
		return h.run(ctx)
	})
}

// handover is one run: the two proxies' installs on one cluster.
type handover struct {
	o      HandoverOptions
	kp, sy *env
	// The step under way: when it started and what its action has done.
	stepStart time.Time
	events    []string
}

func (h *handover) run(ctx context.Context) ([]Step, error) {
	e := h.kp
	if err := e.install(ctx); err != nil {
		return nil, e.withLogs(ctx, fmt.Errorf("installing %s: %w", e.p.name, err))
	}
	if err := e.deploy(ctx, e.handoverWorkloads()); err != nil {
		return nil, fmt.Errorf("deploying the workloads: %w", err)
	}
	paths := e.handoverPaths()
	for _, p := range paths {
		if err := e.eventually(ctx, e.warm(p)); err != nil {
			return nil, fmt.Errorf("before the load, %s: %w", p.name, err)
		}
	}
	load, err := e.startLoad(ctx, paths, "")
	if err != nil {
		return nil, err
	}
	var steps []Step
	var starts []time.Time
	var names []string
	for _, s := range h.steps() {
		h.stepStart, h.events = time.Now(), nil
		starts, names = append(starts, h.stepStart), append(names, s.name)
		more, err := e.startLoad(ctx, paths, s.name)
		load = append(load, more...)
		if err != nil {
			stopLoad(load)
			return steps, err
		}
		h.o.Logf("step %s", s.name)
		st := Step{Name: s.name}
		if s.do != nil {
			st.Err = s.do(ctx)
		}
		st.Action = time.Since(h.stepStart)
		if st.Err != nil {
			st.Err = h.sy.withLogs(ctx, st.Err)
		}
		if st.Err == nil {
			select {
			case <-ctx.Done():
			case <-time.After(h.o.Settle):
			}
		}
		st.Events = h.events
		st.Logs = h.sy.agentLogs(ctx) + h.kp.agentLogs(ctx) + h.conntrackStats(ctx)
		steps = append(steps, st)
		if st.Err != nil {
			break
		}
	}
	results, err := stopLoad(load)
	if err != nil {
		return steps, err
	}
	for i, counts := range cut(load, results, starts, names) {
		steps[i].Paths = counts
	}
	return steps, nil
}

type handoverStep struct {
	name string
	do   func(context.Context) error
}

// steps: the handover (Switchyard beside kube-proxy until Ready, then kube-proxy
// and its rules removed), an upgrade of Switchyard, and the rollback (kube-proxy
// beside Switchyard until it has programmed the node, then Switchyard and its
// state removed). Each action marks its stages, so the table's loss times can be
// read against them.
func (h *handover) steps() []handoverStep {
	k, s := h.kp, h.sy
	return []handoverStep{
		{"kube-proxy", nil},
		{"switchyard-added", h.marked("switchyard Ready", s.install)},
		{"kube-proxy-removed", h.marked("kube-proxy's pods gone", k.uninstall,
			"Switchyard answers on 10256 and the health check node port", h.healthTakenOver,
			"its rules cleaned up", k.cleanup(0))},
		{"switchyard-upgraded", h.marked("every pod replaced and Ready", s.upgrade)},
		{"kube-proxy-back", h.marked("kube-proxy's pods Running", k.install, "its rules in place", k.waitKubeProxyRules)},
		{"switchyard-removed", h.marked("switchyard's pods gone", s.uninstall, "drained and its state cleaned up", s.cleanup(h.o.Settle))},
	}
}

// marked runs the stages (name, function, name, function...) one after the other,
// noting when each ended in the step's events.
func (h *handover) marked(stages ...any) func(context.Context) error {
	return func(ctx context.Context) error {
		for i := 0; i+1 < len(stages); i += 2 {
			if err := stages[i+1].(func(context.Context) error)(ctx); err != nil {
				return err
			}
			h.events = append(h.events, fmt.Sprintf("%s at %.1fs", stages[i], time.Since(h.stepStart).Seconds()))
		}
		return nil
	}
}

// handoverWorkloads: two pods of a request/reply server spread over the nodes
// behind a ClusterIP, a NodePort, a LoadBalancer and an externalTrafficPolicy
// Local LoadBalancer Service, and a client pod on the last node.
func (e *env) handoverWorkloads() workloads {
	nodes := e.c.Nodes()
	steady := deployment("steady", 2, "")
	steady.Spec.Template.Spec.Containers[0].Command = []string{"/echo", "-tcp-rr", fmt.Sprint(echoTCP), "-udp", fmt.Sprint(echoUDP)}
	return workloads{
		deps: []*appsv1.Deployment{steady, deployment("client", 1, nodes[len(nodes)-1].Name)},
		svcs: []*corev1.Service{
			service("steady", "steady"),
			service("steady-np", "steady", nodePort),
			service("steady-lb", "steady", loadBalancer()),
			service("steady-local", "steady", loadBalancer(), local),
		},
		lbIPs: map[string]string{"steady-lb": lbIP, "steady-local": localLBIP},
	}
}

// handoverPaths are the traffic the issue asks to keep through every step.
func (e *env) handoverPaths() []path {
	nodes, ext := e.c.Nodes(), e.c.ExternalClients()
	n1 := nodes[0].Name
	pod, node1, ext0, ext1 := from{"pod", "client"}, from{"node", n1}, from{"external", ext[0].IP}, from{"external", ext[1].IP}
	cip, np := target{"steady", "tcp", "cluster"}, target{"steady-np", "tcp", "node:" + n1}
	return []path{
		{"pod->clusterip", pod, cip, "conn", "", ""},
		{"node->clusterip", node1, cip, "conn", "", ""},
		{"external->nodeport", ext0, np, "conn", "", ""},
		{"external->lb", ext0, target{"steady-lb", "tcp", "lb:" + lbIP}, "conn", "", ""},
		{"external->local-lb", ext0, target{"steady-local", "tcp", "lb:" + localLBIP}, "conn", "", ""},
		{"pod->clusterip-udp", pod, target{"steady", "udp", "cluster"}, "udp", "", ""},
		{"pod->clusterip-long", pod, cip, "persistent", "", ""},
		{"external->nodeport-long", ext1, np, "persistent", "", ""},
		// Opened through Switchyard's tc path only, kept through its upgrade and
		// the rollback.
		{"external->nodeport-long-sy", ext1, np, "persistent", "switchyard-upgraded", "switchyard-removed"},
	}
}

// Table is the step as a table: a line per path with requests tried, failed (by
// kind), long-lived connections broken and the slowest answer.
func (s Step) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-28s %7s %7s %7s %9s  %s\n", "path", "tried", "failed", "broken", "worst ms", "lost at (s)")
	for _, p := range s.Paths {
		failed := fmt.Sprint(p.failed())
		if len(p.Failed) > 0 && p.failed() > 0 {
			var kinds []string
			for _, k := range slices.Sorted(maps.Keys(p.Failed)) {
				if p.Failed[k] > 0 {
					kinds = append(kinds, fmt.Sprintf("%s %d", k, p.Failed[k]))
				}
			}
			failed += " (" + strings.Join(kinds, ", ") + ")"
		}
		when := ""
		if p.failed()+p.Broken > 0 {
			when = fmt.Sprintf("%.2f-%.2f", p.From, p.To+0.25)
		}
		if p.Cut && p.Broken > 0 {
			when += " (known: cut after the drain)"
		}
		fmt.Fprintf(&b, "%-28s %7d %7s %7d %9.1f  %s\n", p.Path, p.Tried, failed, p.Broken, p.MaxMs, when)
	}
	return b.String()
}

// conntrackStats are each node's conntrack counters (insert_failed and drop show
// packets conntrack refused), for the logs of a step that lost something.
func (h *handover) conntrackStats(ctx context.Context) string {
	var b strings.Builder
	for _, n := range h.kp.c.Nodes() {
		out, err := cluster.Output(h.kp.c.NodeCommand(ctx, n.Name, "conntrack", "-S"))
		fmt.Fprintf(&b, "== %s conntrack -S (%v)\n%s", n.Name, err, out)
	}
	return b.String()
}

// healthTakenOver waits until, on every node, 10256 answers /healthz and the Local
// Service's health check node port answers 200 (each node has a local endpoint):
// with kube-proxy gone, Switchyard's. The time it takes is how long load
// balancers saw the node fail its checks; 5 s is a failure (the next periodic
// sync, 30 s, would otherwise be when Switchyard took the ports).
func (h *handover) healthTakenOver(ctx context.Context) error {
	e := h.sy
	ext := from{"external", e.c.ExternalClients()[0].IP}
	want := map[string]int{}
	for _, n := range e.c.Nodes() {
		want[n.Name] = 200
	}
	var last error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		last = nil
		for _, n := range e.c.Nodes() {
			if code, err := e.httpStatus(ctx, from{"node", n.Name}, kubeProxyHealthz); err != nil || code != 200 {
				last = fmt.Errorf("node %s: %s answered %d (%v)", n.Name, kubeProxyHealthz, code, err)
				return false, nil
			}
		}
		last = e.healthCheck(ext, "steady-local", want)(ctx)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("5 s after kube-proxy left: %w (%v)", err, last)
	}
	return nil
}
