package flow

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// OutputKind is what a flow expects.
type OutputKind int

const (
	// Endpoints: new connections reach exactly the listed endpoints.
	Endpoints OutputKind = iota
	// Reject: refused quickly (TCP reset, ICMP unreachable).
	Reject
	// Drop: no answer within the timeout.
	Drop
	// Untouched: the proxy leaves the packet alone.
	Untouched
)

// Output is a parsed "output" field.
type Output struct {
	Kind      OutputKind
	Endpoints []netip.AddrPort // sorted
}

// ParseOutput parses "ip:port, ip:port", "REJECT", "DROP" or "".
func ParseOutput(s string) (Output, error) {
	switch strings.TrimSpace(s) {
	case "":
		return Output{Kind: Untouched}, nil
	case "REJECT":
		return Output{Kind: Reject}, nil
	case "DROP":
		return Output{Kind: Drop}, nil
	}
	var o Output
	for _, part := range strings.Split(s, ",") {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(part))
		if err != nil {
			return o, fmt.Errorf("output %q: %q is not ip:port, REJECT, DROP or empty", s, part)
		}
		o.Endpoints = append(o.Endpoints, ap)
	}
	slices.SortFunc(o.Endpoints, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return o, nil
}

func (o Output) String() string {
	switch o.Kind {
	case Reject:
		return "REJECT"
	case Drop:
		return "DROP"
	case Untouched:
		return "untouched"
	}
	return joinAddrPorts(o.Endpoints)
}

// Result is what one probe connection saw (the probe program's JSON line).
type Result struct {
	Result   string `json:"result"` // ok, refused, timeout, error
	Endpoint string `json:"endpoint"`
	Peer     string `json:"peer"`
	Error    string `json:"error"`
}

// Verdict judges the results of repeated new connections of one flow.
type Verdict struct {
	Pass bool
	Got  string
}

// Judge decides whether results meet the flow. assertMasq is false where the
// source address the endpoint sees says nothing (clients on the node itself).
// Untouched flows to a node address are judged by the caller, who knows the
// listener it put there; here "untouched" means no service endpoint answered.
func Judge(f Flow, out Output, results []Result, assertMasq bool) Verdict {
	if len(results) == 0 {
		return Verdict{Got: "no results"}
	}
	counts := map[string]int{}
	var seen []netip.AddrPort
	var peers []netip.Addr // the client addresses the endpoints saw
	var problems []string
	src, _ := netip.ParseAddr(f.SourceIP)
	for _, r := range results {
		counts[r.Result]++
		if r.Result != "ok" {
			continue
		}
		ep, err := netip.ParseAddrPort(r.Endpoint)
		if err != nil {
			problems = append(problems, fmt.Sprintf("bad endpoint %q", r.Endpoint))
			continue
		}
		if !slices.Contains(seen, ep) {
			seen = append(seen, ep)
		}
		if peer, err := netip.ParseAddrPort(r.Peer); err == nil && !slices.Contains(peers, peer.Addr().Unmap()) {
			peers = append(peers, peer.Addr().Unmap())
		}
		if assertMasq && out.Kind == Endpoints {
			peer, err := netip.ParseAddrPort(r.Peer)
			masq := err != nil || peer.Addr().Unmap() != src.Unmap()
			if masq != f.Masq {
				problems = append(problems, fmt.Sprintf("masq=%v (endpoint saw %s)", masq, r.Peer))
			}
		}
	}
	slices.SortFunc(seen, func(a, b netip.AddrPort) int { return a.Compare(b) })
	slices.SortFunc(peers, netip.Addr.Compare)
	got := summarize(counts, seen, peers, problems)
	switch out.Kind {
	case Reject:
		return Verdict{Pass: counts["refused"] == len(results), Got: got}
	case Drop:
		return Verdict{Pass: counts["timeout"] == len(results), Got: got}
	case Untouched:
		return Verdict{Pass: counts["ok"] == 0, Got: got}
	}
	pass := counts["ok"] == len(results) && len(problems) == 0 && slices.Equal(seen, out.Endpoints)
	if f.Affinity {
		pass = counts["ok"] == len(results) && len(problems) == 0 && len(seen) == 1 && slices.Contains(out.Endpoints, seen[0])
	}
	return Verdict{Pass: pass, Got: got}
}

func summarize(counts map[string]int, seen []netip.AddrPort, peers []netip.Addr, problems []string) string {
	var parts []string
	if len(seen) > 0 {
		s := joinAddrPorts(seen)
		if len(peers) > 0 {
			ps := make([]string, len(peers))
			for i, p := range peers {
				ps[i] = p.String()
			}
			s += " (from " + strings.Join(ps, ", ") + ")"
		}
		parts = append(parts, s)
	}
	for _, k := range []string{"refused", "timeout", "error"} {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
		}
	}
	parts = append(parts, problems...)
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, "; ")
}

func joinAddrPorts(aps []netip.AddrPort) string {
	s := make([]string, len(aps))
	for i, ap := range aps {
		s[i] = ap.String()
	}
	return strings.Join(s, ", ")
}
