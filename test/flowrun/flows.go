package flowrun

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/topology"
)

// world is one case's topology with the proxy running.
type world struct {
	topo *topology.Topology
	c    flow.Case
	pods map[string]string // pod IP -> pod name
	o    Options
}

const (
	batch        = 8  // connections per probe run
	maxConnects  = 64 // give up finding every endpoint after this many
	refusalTries = 2
)

func (w world) run(ctx context.Context, f flow.Flow) (Outcome, error) {
	oc := Outcome{Case: w.c.Name, Flow: f.Name, Expected: expected(f)}
	if reason := w.o.flowSkipReason(w.c, f); reason != "" {
		oc.Status, oc.Got = "SKIP", reason
		return oc, nil
	}
	out, err := flow.ParseOutput(f.Output)
	if err != nil {
		return oc, err
	}
	kind := w.c.SourceKind(f.SourceIP)
	ns, src := w.source(kind, f.SourceIP)
	dst := netip.AddrPortFrom(netip.MustParseAddr(f.DestIP), uint16(f.DestPort)).String()
	proto := strings.ToLower(f.Protocol)

	if out.Kind == flow.Untouched && w.isNodeAddr(f.DestIP) {
		return w.runUntouchedToNode(ctx, oc, ns, src, proto, dst)
	}
	results, err := w.probe(ctx, ns, src, proto, dst, f, out)
	if err != nil {
		return oc, err
	}
	v := flow.Judge(f, out, results, kind != flow.NodeSource)
	oc.Got = v.Got
	oc.Status = map[bool]string{true: "PASS", false: "FAIL"}[v.Pass]
	return oc, nil
}

// source is the namespace a flow's client runs in and the address it binds.
func (w world) source(kind flow.SourceKind, ip string) (ns, src string) {
	switch kind {
	case flow.NodeSource:
		if netip.MustParseAddr(ip).IsLoopback() {
			// Unbound: the kernel picks loopback for a loopback destination, which is
			// how real clients reach localhost NodePorts; a socket bound to 127.0.0.1
			// could never reach a pod once socket-level load balancing rewrote it.
			return w.topo.NodeNS(), ""
		}
		return w.topo.NodeNS(), ip
	case flow.ExternalSource:
		return w.topo.ExternalNS(ip), ""
	}
	return w.topo.PodNS(w.pods[ip]), ""
}

func (w world) isNodeAddr(ip string) bool { return slices.Contains(w.c.Node.IPs, ip) }

// probe opens new connections until the outcome is clear: every expected endpoint
// seen, something unexpected, or the cap.
func (w world) probe(ctx context.Context, ns, src, proto, dst string, f flow.Flow, out flow.Output) ([]flow.Result, error) {
	opts := topology.ProbeOptions{Src: src, Timeout: probeTimeout, N: batch}
	if out.Kind != flow.Endpoints {
		opts.N = refusalTries
	}
	var all []flow.Result
	for len(all) < maxConnects {
		rs, err := w.topo.Probe(ctx, ns, proto, dst, opts)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			all = append(all, flow.Result{Result: r.Result, Endpoint: r.Endpoint, Peer: r.Peer, Error: r.Error})
		}
		if out.Kind != flow.Endpoints || f.Affinity || settled(all, out) {
			break
		}
	}
	return all, nil
}

// settled: every expected endpoint was seen, or something went wrong already.
func settled(rs []flow.Result, out flow.Output) bool {
	seen := map[string]bool{}
	for _, r := range rs {
		if r.Result != "ok" {
			return true
		}
		seen[r.Endpoint] = true
	}
	for _, ep := range out.Endpoints {
		if !seen[ep.String()] {
			return false
		}
	}
	return true
}

// runUntouchedToNode: the proxy must leave a node address:port alone, so a plain
// listener the runner puts there answers.
func (w world) runUntouchedToNode(ctx context.Context, oc Outcome, ns, src, proto, dst string) (Outcome, error) {
	ap := netip.MustParseAddrPort(dst)
	cmd, err := w.topo.StartEcho(ctx, w.topo.NodeNS(), []topology.Port{{Protocol: strings.ToUpper(proto), Port: int(ap.Port())}})
	if err != nil {
		return oc, fmt.Errorf("listener on the node: %w", err)
	}
	defer func() {
		_ = cmd.Process.Kill() // the listener's exit status is of no interest
		_ = cmd.Wait()
	}()
	rs, err := w.topo.Probe(ctx, ns, proto, dst, topology.ProbeOptions{Src: src, Timeout: probeTimeout, N: refusalTries})
	if err != nil {
		return oc, err
	}
	pass := len(rs) > 0
	var got []string
	for _, r := range rs {
		if r.Result != "ok" || r.Endpoint != dst {
			pass = false
		}
		got = append(got, r.Result+" "+r.Endpoint)
	}
	oc.Got = "the node's own listener: " + strings.Join(got, ", ")
	oc.Status = map[bool]string{true: "PASS", false: "FAIL"}[pass]
	return oc, nil
}
