// Package flowrun runs flow cases against a proxy in simulated nodes: for every
// case it builds a topology, publishes the case's objects, starts the proxy in the
// node namespace, probes every flow from where its source runs, and judges.
package flowrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/topology"
)

// Proxies the runner knows.
var Proxies = []string{"switchyard-ebpf", "switchyard-iptables", "switchyard-ipvs", "kube-proxy-iptables", "kube-proxy-nftables"}

// Options configure a run.
type Options struct {
	Proxy  string
	Source string // "apiserver" or "file"
	// Run selects cases and flows by name (either matches); nil: all.
	Run  *regexp.Regexp
	Keep bool // leave each topology up (and stop after the first case)
	Out  io.Writer

	EchoBin, ProbeBin string
	// KubeProxyBin is needed for the kube-proxy proxies, SwitchyardBin for ours.
	KubeProxyBin, SwitchyardBin string
	// API is the control plane, for --source=apiserver.
	API API
}

// API is the control plane the objects are published to.
type API interface {
	Client() kubernetes.Interface
	BridgeIntoNetns(nsPath string, port int) (stop func() error, err error)
	KubeconfigFor(server string) (string, error)
}

// Outcome is the result of one flow.
type Outcome struct {
	Case string `json:"case"`
	Flow string `json:"flow"`
	// PASS, FAIL, SKIP, or ERROR: the case could not be set up or run to its end
	// (Flow is empty, Got is the error).
	Status   string `json:"status"`
	Expected string `json:"expected"`
	Got      string `json:"got"`
}

// Report is a whole run.
type Report struct {
	Proxy    string    `json:"proxy"`
	Source   string    `json:"source"`
	Outcomes []Outcome `json:"outcomes"`
	Passed   int       `json:"passed"`
	Failed   int       `json:"failed"`
	Skipped  int       `json:"skipped"`
}

func (r *Report) add(o Outcome, out io.Writer) {
	r.Outcomes = append(r.Outcomes, o)
	switch o.Status {
	case "PASS":
		r.Passed++
	case "FAIL":
		r.Failed++
	default:
		r.Skipped++
	}
	fmt.Fprintf(out, "%s %s / %s: expected %s got %s\n", o.Status, o.Case, o.Flow, o.Expected, o.Got)
}

func (r *Report) skipAll(c flow.Case, flows []flow.Flow, reason string, out io.Writer) {
	for _, f := range flows {
		r.add(Outcome{Case: c.Name, Flow: f.Name, Status: "SKIP", Expected: expected(f), Got: reason}, out)
	}
}

// addError records a case that could not be set up or run to its end, as one
// failure: how many of its flows it kept from running is unknown.
func (r *Report) addError(c flow.Case, err error, out io.Writer) {
	r.Outcomes = append(r.Outcomes, Outcome{Case: c.Name, Status: "ERROR", Got: err.Error()})
	r.Failed++
	fmt.Fprintf(out, "ERROR %s (%s): %v\n", c.Name, c.File, err)
}

// Summary is the last line of a run.
func (r *Report) Summary() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped", r.Passed, r.Failed, r.Skipped)
}

// Run runs the cases. An error means the harness itself failed, not a flow.
func Run(ctx context.Context, o Options, cases []flow.Case) (*Report, error) {
	return o.run(ctx, cases, o.runCase)
}

// caseFunc runs the selected flows of one case; tests put a fake in.
type caseFunc func(ctx context.Context, c flow.Case, flows []flow.Flow) ([]Outcome, error)

func (o Options) run(ctx context.Context, cases []flow.Case, runCase caseFunc) (*Report, error) {
	rep := &Report{Proxy: o.Proxy, Source: o.Source}
	for _, c := range cases {
		flows := o.selected(c)
		if len(flows) == 0 {
			continue
		}
		if skip := o.skipReason(c); skip != "" {
			rep.skipAll(c, flows, skip, o.Out)
			continue
		}
		outcomes, err := runCase(ctx, c, flows)
		for _, oc := range outcomes {
			rep.add(oc, o.Out)
		}
		if err != nil && ctx.Err() != nil {
			// Interrupted: every case after this one would fail the same way.
			return rep, fmt.Errorf("case %q (%s): %w", c.Name, c.File, err)
		}
		if err != nil {
			// One case that cannot be set up says nothing about the others.
			rep.addError(c, err, o.Out)
		}
		if o.Keep {
			fmt.Fprintf(o.Out, "--keep: stopping after case %q with what it built left up\n", c.Name)
			break
		}
	}
	return rep, nil
}

func (o Options) selected(c flow.Case) []flow.Flow {
	if o.Run == nil || o.Run.MatchString(c.Name) {
		return c.Flows
	}
	var out []flow.Flow
	for _, f := range c.Flows {
		if o.Run.MatchString(f.Name) {
			out = append(out, f)
		}
	}
	return out
}

func (o Options) skipReason(c flow.Case) string {
	if !c.AppliesTo(o.Proxy) {
		return "(skipped: the expectations are for " + strings.Join(c.Proxies, ", ") + ")"
	}
	return ""
}

// flowSkipReason says why one flow cannot run against the proxy, or "".
func (o Options) flowSkipReason(c flow.Case, f flow.Flow) string {
	if strings.EqualFold(f.Protocol, "SCTP") {
		return "(skipped: SCTP is not in this kernel)"
	}
	return ""
}

// runCase builds the case's world, starts the proxy and runs the flows.
func (o Options) runCase(ctx context.Context, c flow.Case, flows []flow.Flow) (outcomes []Outcome, err error) {
	sc, pods := o.scenario(c)
	topo, err := topology.Build(ctx, sc)
	if err != nil {
		return nil, err
	}
	if !o.Keep {
		defer closeInto(topo.Close, &err)
	}
	if err := topo.AssertIsolated(); err != nil {
		return nil, err
	}
	stop, err := o.StartProxy(ctx, topo, c)
	if err != nil {
		return nil, err
	}
	if !o.Keep {
		defer closeInto(stop, &err)
	}
	w := world{topo: topo, c: c, pods: pods, o: o}
	for _, f := range flows {
		oc, err := w.run(ctx, f)
		if err != nil {
			return outcomes, fmt.Errorf("flow %q: %w", f.Name, err)
		}
		outcomes = append(outcomes, oc)
	}
	return outcomes, nil
}

// StartProxy runs o.Proxy in topo's node for case c until its first sync,
// publishing the case's objects first when the proxy reads them from the API
// server. stop ends the proxy and unpublishes.
func (o Options) StartProxy(ctx context.Context, topo *topology.Topology, c flow.Case) (stop func() error, err error) {
	objs := c.ToObjects()
	unpublish := func() error { return nil }
	if o.Source == "apiserver" {
		if err := flow.Publish(ctx, o.API.Client(), objs); err != nil {
			return nil, errors.Join(err, flow.Unpublish(context.WithoutCancel(ctx), o.API.Client(), objs))
		}
		unpublish = func() error { return flow.Unpublish(context.WithoutCancel(ctx), o.API.Client(), objs) }
	}
	stopProxy, err := o.launchAndWait(ctx, topo, c, objs)
	if err != nil {
		return nil, errors.Join(err, unpublish())
	}
	return func() error { return errors.Join(stopProxy(), unpublish()) }, nil
}

func closeInto(f func() error, err *error) {
	if cerr := f(); cerr != nil && *err == nil {
		*err = cerr
	}
}

// scenario turns a case into a topology: its node, a remote node for the endpoints
// elsewhere, a pod per endpoint and client pod, and the external clients.
func (o Options) scenario(c flow.Case) (topology.Scenario, map[string]string) {
	sc := topology.Scenario{
		Node:    topology.Node{Name: c.Node.Name, IPs: c.Node.IPs},
		EchoBin: o.EchoBin, ProbeBin: o.ProbeBin,
	}
	pods := map[string]string{} // pod IP -> pod name
	for i, p := range c.Pods() {
		name := fmt.Sprintf("pod%d", i)
		pods[p.IP] = name
		tp := topology.Pod{Name: name, IP: p.IP, Local: p.Local}
		for _, port := range p.TCP {
			tp.Ports = append(tp.Ports, topology.Port{Protocol: "TCP", Port: port})
		}
		for _, port := range p.UDP {
			tp.Ports = append(tp.Ports, topology.Port{Protocol: "UDP", Port: port})
		}
		sc.Pods = append(sc.Pods, tp)
		if !p.Local {
			sc.RemoteNode = topology.Node{Name: "remote", IPs: remoteNodeIPs(c)}
		}
	}
	for _, ip := range c.ExternalClients() {
		sc.External = append(sc.External, topology.Client{IP: ip})
	}
	return sc, pods
}

// remoteNodeIPs picks, for each family of the node, an address next to the node's
// first one of that family.
func remoteNodeIPs(c flow.Case) []string {
	var out []string
	seen := map[bool]bool{}
	for _, s := range c.Node.IPs {
		a := netip.MustParseAddr(s)
		if seen[a.Is4()] {
			continue
		}
		seen[a.Is4()] = true
		for a = a.Next(); slices.Contains(c.Node.IPs, a.String()); a = a.Next() {
		}
		out = append(out, a.String())
	}
	return out
}

// probeTimeout is how long a connection may take before it counts as dropped.
const probeTimeout = 1500 * time.Millisecond

func expected(f flow.Flow) string {
	if f.Output == "" {
		return "untouched"
	}
	return f.Output
}
