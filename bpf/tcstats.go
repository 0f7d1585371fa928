package bpf

import (
	"context"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// tcEvents name the lb_events counters of tc.c, in its order.
var tcEvents = [...]string{
	"new_flow",          // a connection from outside load-balanced
	"reopen",            // a SYN on a closed flow's tuple: started over
	"reject",            // refused with ICMP port unreachable (no endpoints, unserved port)
	"drop_policy",       // dropped: a Local policy without local endpoints
	"drop_source_range", // dropped: not in loadBalancerSourceRanges
	"drop_no_snat_port", // dropped: no free masquerade port towards the backend
	"to_stack",          // translated, but left to the kernel's routing (no FIB result here)
	"error",             // dropped: the packet could not be rewritten
	"ct_full",           // an established connection left evictable: ct_assured is full (--bpf-ct-max)
	"host_port",         // a connection of the node's own moved off a port a masqueraded flow holds
	"untracked",         // a TCP segment other than a SYN with no flow: left to the stack (a connection from before, e.g. kube-proxy's)
	"drained",           // a new connection left to the stack: the programs are draining (a rollback to kube-proxy)
}

// TCEvents sums the per-CPU counters.
func TCEvents(m *ebpf.Map) (map[string]uint64, error) {
	out := make(map[string]uint64, len(tcEvents))
	for i, name := range tcEvents {
		var perCPU []uint64
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("lb_events %s: %w", name, err)
		}
		var n uint64
		for _, v := range perCPU {
			n += v
		}
		out[name] = n
	}
	return out, nil
}

// eventsCollector exports the counters as switchyard_bpf_tc_events_total.
func eventsCollector(m *ebpf.Map) prometheus.Collector {
	desc := prometheus.NewDesc("switchyard_bpf_tc_events_total",
		"Packets from outside the node by what the tc programs did with them (new flows, refusals, drops and why)",
		[]string{"event"}, nil)
	return collectorFunc{desc, func(ch chan<- prometheus.Metric) {
		evs, err := TCEvents(m)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(desc, err)
			return
		}
		for _, name := range tcEvents {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(evs[name]), name)
		}
	}}
}

// dropEvents are the counters that mean a connection or packet was lost: each
// rise is logged, at most once per interval and reason.
var dropEvents = []string{"drop_no_snat_port", "ct_full", "error"}

// logDrops logs what the drop counters gained every interval, until ctx ends:
// a drop here is otherwise only a metric.
func logDrops(ctx context.Context, events *ebpf.Map, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	last, err := TCEvents(events)
	if err != nil {
		klog.ErrorS(err, "Reading the tc programs' counters")
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, err := TCEvents(events)
		if err != nil {
			klog.ErrorS(err, "Reading the tc programs' counters")
			continue
		}
		for _, d := range dropsSince(last, now) {
			klog.InfoS("Connections from outside the node dropped", "reason", d.reason, "count", d.count,
				"in", interval, "hint", dropHints[d.reason])
		}
		last = now
	}
}

type drop struct {
	reason string
	count  uint64
}

// dropsSince is what each drop counter gained from last to now (nothing when
// last is unknown: a restart's pinned counters are not news).
func dropsSince(last, now map[string]uint64) []drop {
	var out []drop
	for _, name := range dropEvents {
		if d := now[name] - last[name]; last != nil && now[name] > last[name] {
			out = append(out, drop{name, d})
		}
	}
	return out
}

var dropHints = map[string]string{
	"drop_no_snat_port": "no free masquerade port towards a backend: too many new connections to one backend",
	"ct_full":           "established connections may be evicted: raise --bpf-ct-max",
	"error":             "packets the tc programs could not rewrite",
}
