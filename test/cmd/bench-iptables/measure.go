package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchyard/switchyard/test/controlplane"
	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/flowrun"
	"github.com/switchyard/switchyard/test/topology"
)

// result is one proxy at one size; durations in seconds, memory in MiB.
type result struct {
	Proxy    string `json:"proxy"`
	Services int    `json:"services"`
	Error    string `json:"error,omitempty"`
	// ColdDNF is the cold timeout when the ruleset was not complete within it.
	ColdDNF float64 `json:"cold_did_not_finish_within_s,omitempty"`
	// ColdStart: process start to the end of the sync after which the nat table
	// holds every service (the proxy's kubeproxy_sync_proxy_rules_last_timestamp_seconds).
	ColdStart float64        `json:"cold_start_to_full_ruleset_s"`
	FirstSync float64        `json:"first_sync_duration_s"` // kubeproxy_sync_full_proxy_rules_duration_seconds
	Variant   string         `json:"iptables_variant"`
	RSSCold   float64        `json:"rss_after_cold_mib"`
	RSSEnd    float64        `json:"rss_after_changes_mib"`
	RSSPeak   float64        `json:"rss_peak_mib"`
	Changes   []changeResult `json:"changes"`
	// NetProg is the mean of kubeproxy_network_programming_duration_seconds over
	// the endpoint changes (their slices carry the trigger time).
	NetProg float64 `json:"network_programming_mean_s"`
	// RuleCheck is how long one look at the nat table took (median): the
	// resolution of InKernel.
	RuleCheck float64 `json:"rule_check_median_s"`
}

// changeResult is one change; times are seconds from just before the write.
type changeResult struct {
	changeSpec
	Write    float64 `json:"write_s"`     // the API call
	InKernel float64 `json:"in_kernel_s"` // the rule first seen in the nat table
	// Synced is the end of the proxy's latest sync when the rule was seen (its
	// last-sync metric); -1 when that metric did not move past the write.
	Synced  float64 `json:"sync_end_s"`
	Reached string  `json:"reached,omitempty"` // service creations: a connection from the client pod
	Error   string  `json:"error,omitempty"`
}

var errTimeout = errors.New("timed out")

// measure runs one proxy in a fresh topology against what the API server holds
// now, then reverts its changes.
func (e *env) measure(ctx context.Context, proxy string, services int) result {
	res := result{Proxy: proxy, Services: services}
	var applied []changeSpec
	err := e.measureInto(ctx, &res, &applied)
	if len(applied) > 0 {
		err = errors.Join(err, e.cl.undo(context.WithoutCancel(ctx), applied))
	}
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

func (e *env) measureInto(ctx context.Context, res *result, applied *[]changeSpec) (err error) {
	topo, err := e.buildTopology(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, topo.Close()) }()
	o := flowrun.Options{Proxy: res.Proxy, Source: "apiserver", API: e.cp,
		KubeProxyBin: filepath.Join(controlplane.BinDir(), "kube-proxy"), SwitchyardBin: e.agentBin}
	p, err := o.Launch(ctx, topo, benchCase(), flow.Objects{})
	if err != nil {
		return err
	}
	n := &node{topo: topo, p: p, chains: "KUBE-"}
	if strings.HasPrefix(res.Proxy, "switchyard-") {
		n.chains = "SWYD-"
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s log (last lines):\n%s", err, res.Proxy, p.LogTail(20))
		}
		err = errors.Join(err, stopWithin(p, res.Proxy, time.Minute))
	}()
	defer func() { res.RuleCheck = median(n.polls) }()
	if done, err := n.cold(ctx, e.o, res); err != nil || !done {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s, %d services: cold start %.2fs (RSS %.0f MiB); %d changes\n",
		res.Proxy, res.Services, res.ColdStart, res.RSSCold, e.o.changes)
	m0, err := n.metrics(ctx)
	if err != nil {
		return err
	}
	for k := range e.o.changes {
		ch := planChange(k, res.Services)
		*applied = append(*applied, ch)
		if err := e.cl.prepare(ctx, ch); err != nil {
			return fmt.Errorf("change %d (%s %s): %w", k, ch.Kind, ch.Target, err)
		}
		if ch.Kind == "service" { // let the proxy take in the slice first
			if err := n.wait(ctx, time.Now().Add(time.Hour), e.o.pause); err != nil {
				return err
			}
		}
		if err := n.quiet(ctx, e.o.pause); err != nil {
			return err
		}
		cr, err := e.change(ctx, n, ch)
		if err != nil {
			return fmt.Errorf("change %d (%s %s): %w", k, ch.Kind, ch.Target, err)
		}
		res.Changes = append(res.Changes, cr)
		if cr.Error != "" {
			break // the dataplane no longer follows: the next ones would not either
		}
	}
	m1, err := n.metrics(ctx)
	if err != nil {
		return err
	}
	const np = "kubeproxy_network_programming_duration_seconds"
	if c := metric(m1, np+"_count") - metric(m0, np+"_count"); c > 0 {
		res.NetProg = (metric(m1, np+"_sum") - metric(m0, np+"_sum")) / c
	}
	res.RSSEnd, res.RSSPeak, err = n.memory()
	return err
}

const (
	lastSync = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
	fullSync = "kubeproxy_sync_full_proxy_rules_duration_seconds"
)

// cold waits for the first sync, then for the nat table to dispatch to every
// service. done is false when it did not happen within the cold timeout.
func (n *node) cold(ctx context.Context, o options, res *result) (done bool, err error) {
	deadline := n.p.Started.Add(o.coldTimeout)
	var first float64
	for first == 0 {
		// The sync's duration is observed apart from its timestamp: wait for both.
		if m, err := n.metrics(ctx); err == nil && metric(m, lastSync) > 0 && metric(m, fullSync+"_count") > 0 {
			first = metric(m, lastSync)
			res.FirstSync = metric(m, fullSync+"_sum") / metric(m, fullSync+"_count")
			break
		}
		if err := n.wait(ctx, deadline, 250*time.Millisecond); err != nil {
			return coldEnd(err, o, res)
		}
	}
	for checks := 0; ; checks++ {
		c, err := n.services(ctx)
		if err != nil {
			return false, err
		}
		if checks%10 == 0 && c < res.Services {
			fmt.Fprintf(os.Stderr, "  %s has %d of the %d services after its first sync\n", res.Proxy, c, res.Services)
		}
		if c >= res.Services {
			res.ColdStart = first - unix(n.p.Started)
			if checks > 0 { // the first sync was not all of it: the time it was seen
				res.ColdStart = time.Since(n.p.Started).Seconds()
			}
			break
		}
		if err := n.wait(ctx, deadline, 200*time.Millisecond); err != nil {
			return coldEnd(err, o, res)
		}
	}
	res.Variant = n.variant
	res.RSSCold, _, err = n.memory()
	return err == nil, err
}

// coldEnd turns a cold timeout into a result, anything else into an error.
func coldEnd(err error, o options, res *result) (bool, error) {
	if errors.Is(err, errTimeout) {
		res.ColdDNF = o.coldTimeout.Seconds()
		return false, nil
	}
	return false, fmt.Errorf("cold start: %w", err)
}

// change applies one change and waits for its rule in the nat table.
func (e *env) change(ctx context.Context, n *node, ch changeSpec) (changeResult, error) {
	at, write, err := e.cl.apply(ctx, ch)
	if err != nil {
		return changeResult{}, err
	}
	cr := changeResult{changeSpec: ch, Write: write.Seconds(), Synced: -1}
	deadline := at.Add(e.o.changeTimeout)
	for {
		ok, err := n.has(ctx, ch.checks(n.chains))
		if err != nil {
			return cr, err
		}
		if ok {
			cr.InKernel = time.Since(at).Seconds()
			break
		}
		if err := n.wait(ctx, deadline, 5*time.Millisecond); errors.Is(err, errTimeout) {
			cr.Error = fmt.Sprintf("not in the nat table after %s", e.o.changeTimeout)
			return cr, nil
		} else if err != nil {
			return cr, err
		}
	}
	m, err := n.metrics(ctx)
	if err != nil {
		return cr, err
	}
	if ts := metric(m, lastSync); ts > unix(at) {
		cr.Synced = ts - unix(at)
	}
	if ch.Kind == "service" {
		cr.Reached = n.reach(ctx, ch.ip)
	}
	return cr, nil
}

// reach connects from the client pod to a created service: every connection
// must reach the web pod.
func (n *node) reach(ctx context.Context, ip string) string {
	rs, err := n.topo.Probe(ctx, n.topo.PodNS("client"), "tcp", ip+":80", topology.ProbeOptions{Timeout: time.Second, N: 3})
	if err != nil {
		return "error: " + err.Error()
	}
	var bad []string
	for _, r := range rs {
		if r.Result != "ok" || !strings.HasPrefix(r.Endpoint, "10.255.0.") {
			bad = append(bad, r.Result+" "+r.Endpoint+" "+r.Error)
		}
	}
	if len(bad) > 0 || len(rs) == 0 {
		return "failed: " + strings.Join(bad, ", ")
	}
	return "ok"
}

// quiet waits until the proxy's last sync is at least d old, so that a change
// meets an idle proxy (not one held back by its --min-sync-period).
func (n *node) quiet(ctx context.Context, d time.Duration) error {
	for {
		m, err := n.metrics(ctx)
		if err != nil {
			return err
		}
		since := time.Since(time.Unix(0, int64(metric(m, lastSync)*1e9)))
		if since >= d {
			return nil
		}
		if err := n.wait(ctx, time.Now().Add(time.Hour), d-since); err != nil {
			return err
		}
	}
}

// wait sleeps for d, or fails when ctx is done, the deadline passed or the proxy exited.
func (n *node) wait(ctx context.Context, deadline time.Time, d time.Duration) error {
	switch {
	case n.p.Exited():
		return errors.New("the proxy exited")
	case time.Now().After(deadline):
		return errTimeout
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// stopWithin stops the proxy; if that takes longer than d (a proxy in the
// middle of a long iptables-restore that ignores SIGTERM, say), the proxy is
// killed and the rest of Stop awaited.
func stopWithin(p *flowrun.Proxy, name string, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- p.Stop() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		fmt.Fprintf(os.Stderr, "  stopping %s took more than %s: killing its process, waiting for the rest\n", name, d)
		_ = p.Cmd.Process.Kill() // Stop's Wait then returns
		return <-done
	}
}

// buildTopology is the node with the web pod (an address per endpoint of the
// created services, all answering on podPort) and the client pod.
func (e *env) buildTopology(ctx context.Context) (*topology.Topology, error) {
	topo, err := topology.Build(ctx, topology.Scenario{
		Node: topology.Node{Name: nodeName, IPs: []string{nodeIP}},
		Pods: []topology.Pod{
			{Name: "web", IP: webIP, Local: true, Ports: []topology.Port{{Protocol: "TCP", Port: podPort}}},
			{Name: "client", IP: clientIP, Local: true}},
		EchoBin: e.echoBin, ProbeBin: e.probeBin,
	})
	if err != nil {
		return nil, err
	}
	err = topo.AssertIsolated()
	for j := 1; err == nil && j < e.o.endpoints; j++ {
		a := webAddr(j) + "/32"
		if _, err = topo.Run(ctx, topo.PodNS("web"), "ip", "addr", "add", a, "dev", "eth0"); err == nil {
			_, err = topo.Run(ctx, topo.NodeNS(), "ip", "route", "add", a, "dev", topo.PodHostIface("web"))
		}
	}
	if err != nil {
		return nil, errors.Join(err, topo.Close())
	}
	return topo, nil
}
