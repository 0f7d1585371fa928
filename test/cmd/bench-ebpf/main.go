// Command bench-ebpf measures the Switchyard agent in eBPF mode at scale (issue 4):
// the time to program N ClusterIP services x M endpoints from cold, the time to
// apply one endpoint change on top of them, and the agent's RSS.
//
//	go run ./test/cmd/bench-ebpf [-services 10000] [-endpoints 10] [-changes 20] [-json FILE]
//
// Run it as root from the repository root. It builds the agent, a one-node
// topology (test/topology: a network namespace and a cgroup of its own, so the
// programs attach to that cgroup only), writes the services as one manifest file
// and runs the agent on it with --source=file. Metrics are scraped with curl
// inside the node namespace; what is programmed is read from the pinned maps.
// Everything (agent, pins, namespaces, cgroup, files) is removed at the end, on
// failure and on SIGINT.
//
// The file source polls every second, so a change's end-to-end latency includes
// 0-1 s of waiting for the poll plus the re-read of the whole file; the report
// splits that from the sync itself.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/flowrun"
	"github.com/switchyard/switchyard/test/topology"
)

func main() {
	o := options{}
	flag.IntVar(&o.services, "services", 10000, "ClusterIP services (port 80/TCP)")
	flag.IntVar(&o.endpoints, "endpoints", 10, "endpoints per service (one EndpointSlice each)")
	flag.IntVar(&o.changes, "changes", 20, "one-endpoint changes applied one after another after the cold sync")
	flag.StringVar(&o.jsonOut, "json", "", "also write the report as JSON to this file")
	flag.StringVar(&o.agentLog, "agent-log", "", "keep the agent's log (--v=2: one line per sync) in this file")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up on the cold sync, or on one change, after this long")
	flag.Parse()
	if flag.NArg() > 0 || o.changes < 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop() // kept until the end: a second ^C must not cut the cleanup short
	rep, err := run(ctx, o)
	if rep != nil {
		rep.print()
		if o.jsonOut != "" {
			data, _ := json.MarshalIndent(rep, "", "  ")
			if werr := os.WriteFile(o.jsonOut, append(data, '\n'), 0o644); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-ebpf:", err)
		os.Exit(1)
	}
}

type options struct {
	services, endpoints, changes int
	jsonOut, agentLog            string
	timeout                      time.Duration
}

// report is what the benchmark measured; durations are in seconds, memory in MiB.
type report struct {
	Services  int `json:"services"`
	Endpoints int `json:"endpoints_per_service"`

	// Cold start: agent process start to the end of its first sync (the agent's
	// own kubeproxy_sync_proxy_rules_last_timestamp_seconds), and that sync alone.
	ColdStart     float64 `json:"cold_start_to_programmed_s"`
	ColdFirstSync float64 `json:"cold_first_sync_duration_s"`
	ColdMaps      census  `json:"cold_maps"`
	RSSCold       float64 `json:"rss_after_cold_mib"`
	HeapCold      float64 `json:"go_heap_inuse_after_cold_mib"`

	Changes []change `json:"changes"`
	// Over the changes: write -> visible in the kernel map (includes the file poll).
	ChangeMedian float64 `json:"change_to_map_median_s"`
	ChangeMax    float64 `json:"change_to_map_max_s"`
	// The agent's partial syncs over the run (sum/count): the pure sync time.
	PartialSyncs    int     `json:"partial_syncs"`
	PartialSyncMean float64 `json:"partial_sync_mean_s"`
	FullSyncs       int     `json:"full_syncs"`
	// kubeproxy_network_programming_duration_seconds (the slices carry a trigger time).
	NetProgMean float64 `json:"network_programming_mean_s"`
	RSSEnd      float64 `json:"rss_after_changes_mib"`
	RSSPeak     float64 `json:"rss_peak_mib"`
	HeapEnd     float64 `json:"go_heap_inuse_after_changes_mib"`
	Wall        float64 `json:"wall_s"`
}

// change is one endpoint change; times are seconds after the file was written.
type change struct {
	Service string  `json:"service"`
	From    int     `json:"from"`
	To      int     `json:"to"`
	Polled  float64 `json:"polled_s"` // the agent read the file (its atime; -1 if atimes are off)
	Queued  float64 `json:"queued_s"` // the agent got the event: after read + parse + diff
	Synced  float64 `json:"synced_s"` // end of the sync that carried it
	InMap   float64 `json:"in_map_s"` // first seen in the kernel map (polled every 1 ms)
}

func run(ctx context.Context, o options) (rep *report, err error) {
	begin := time.Now()
	if err := topology.Prerequisites(); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "bench-ebpf-")
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(tmp)) }()
	fmt.Fprintln(os.Stderr, "building the agent")
	bin, err := flowrun.BuildAgent(ctx, tmp)
	if err != nil {
		return nil, err
	}
	src := filepath.Join(tmp, "manifests")
	if err := os.Mkdir(src, 0o755); err != nil {
		return nil, err
	}
	t0 := time.Now()
	man, err := newManifests(src, o.services, o.endpoints)
	if err != nil {
		return nil, err
	}
	st, _ := os.Stat(filepath.Join(src, manifestFile))
	fmt.Fprintf(os.Stderr, "wrote %d services x %d endpoints (%.1f MB) in %.2fs\n",
		o.services, o.endpoints, float64(st.Size())/1e6, time.Since(t0).Seconds())

	topo, err := topology.Build(ctx, topology.Scenario{Node: topology.Node{Name: nodeName, IPs: []string{nodeIP}}})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, topo.Close()) }()
	logPath := filepath.Join(tmp, "agent.log")
	a, err := startAgent(ctx, topo, bin, src, logPath)
	if a != nil {
		defer func() {
			err = errors.Join(err, a.stop(ctx))
			if err != nil {
				log, _ := os.ReadFile(logPath)
				err = fmt.Errorf("%w\nagent log (last lines):\n%s", err, tail(string(log), 25))
			}
			if o.agentLog != "" {
				if data, rerr := os.ReadFile(logPath); rerr == nil {
					err = errors.Join(err, os.WriteFile(o.agentLog, data, 0o644))
				}
			}
		}()
	}
	if err != nil {
		return nil, err
	}
	rep = &report{Services: o.services, Endpoints: o.endpoints}
	defer func() { rep.Wall = time.Since(begin).Seconds() }()
	if err := coldStart(ctx, o, a, rep); err != nil {
		return rep, err
	}
	maps, err := openMaps(a.pinDir)
	if err != nil {
		return rep, err
	}
	defer func() { err = errors.Join(err, maps.Close()) }()
	if rep.ColdMaps, err = maps.census(); err != nil {
		return rep, err
	}
	if c := rep.ColdMaps; c.Frontends != o.services || c.Slots != o.services*o.endpoints || c.SlotsExpected != c.Slots {
		return rep, fmt.Errorf("the maps do not hold what was written: %+v, want %d frontends with %d slots",
			c, o.services, o.services*o.endpoints)
	}
	if rep.RSSCold, _, err = a.memory(); err != nil {
		return rep, err
	}
	for k := range o.changes {
		c, err := oneChange(ctx, o, a, maps, man, k)
		if err != nil {
			return rep, fmt.Errorf("change %d: %w", k+1, err)
		}
		rep.Changes = append(rep.Changes, c)
	}
	var inMap []float64
	for _, c := range rep.Changes {
		inMap = append(inMap, c.InMap)
	}
	rep.ChangeMedian, rep.ChangeMax = median(inMap), slices.Max(append(inMap, 0))
	m, err := a.metrics(ctx)
	if err != nil {
		return rep, err
	}
	rep.PartialSyncs = int(m["kubeproxy_sync_partial_proxy_rules_duration_seconds_count"])
	rep.PartialSyncMean = mean(m, "kubeproxy_sync_partial_proxy_rules_duration_seconds")
	rep.FullSyncs = int(m["kubeproxy_sync_full_proxy_rules_duration_seconds_count"])
	rep.NetProgMean = mean(m, "kubeproxy_network_programming_duration_seconds")
	rep.HeapEnd = m["go_memstats_heap_inuse_bytes"] / (1 << 20)
	rep.RSSEnd, rep.RSSPeak, err = a.memory()
	return rep, err
}

// coldStart waits for the agent's first sync of every service.
func coldStart(ctx context.Context, o options, a *agent, rep *report) error {
	deadline := time.Now().Add(o.timeout)
	for {
		m, err := a.metrics(ctx)
		if err == nil && m["kubeproxy_sync_proxy_rules_last_timestamp_seconds"] > 0 && m["switchyard_frontends"] >= float64(o.services) {
			rep.ColdStart = m["kubeproxy_sync_proxy_rules_last_timestamp_seconds"] - unix(a.started)
			rep.ColdFirstSync = m["kubeproxy_sync_full_proxy_rules_duration_seconds_sum"]
			rep.HeapCold = m["go_memstats_heap_inuse_bytes"] / (1 << 20)
			return nil
		}
		if log, _ := os.ReadFile(a.log.Name()); strings.Contains(string(log), "Manifests rejected") {
			return errors.New("cold sync: the agent rejected the manifests")
		}
		if err := wait(ctx, a, deadline, 50*time.Millisecond); err != nil {
			return fmt.Errorf("cold sync: %w", err)
		}
	}
}

// oneChange removes or adds one endpoint of one service (or restores it), then
// waits for the kernel map to show the new count and for the agent's metrics to
// show the sync that carried it.
func oneChange(ctx context.Context, o options, a *agent, maps *kernelMaps, man *manifests, k int) (change, error) {
	i := (k*7919 + 13) % o.services // spread over the services
	c := change{Service: namespace + "/" + svcName(i), From: man.count[i], To: o.endpoints}
	if c.From == o.endpoints {
		c.To = o.endpoints - 1 // even changes remove one endpoint, odd ones add one
		if k%2 == 1 || c.To == 0 {
			c.To = o.endpoints + 1
		}
	}
	// A random pause first: the file source polls every second, and writing right
	// after the previous change was seen would always wait out a whole poll period.
	if err := wait(ctx, a, time.Now().Add(time.Minute), time.Duration(rand.Int64N(int64(time.Second)))); err != nil {
		return c, err
	}
	written, err := man.setEndpoints(i, c.To)
	if err != nil {
		return c, err
	}
	deadline := written.Add(o.timeout)
	for {
		n, err := maps.backendCount(i)
		if err != nil {
			return c, err
		}
		if n == c.To {
			c.InMap = time.Since(written).Seconds()
			c.Polled = man.readAt().Sub(written).Seconds()
			if c.Polled < 0 {
				c.Polled = -1
			}
			break
		}
		if err := wait(ctx, a, deadline, time.Millisecond); err != nil {
			return c, fmt.Errorf("%s: %d -> %d endpoints not in the map: %w", c.Service, c.From, c.To, err)
		}
	}
	for {
		m, err := a.metrics(ctx)
		if err != nil {
			return c, err
		}
		queued, synced := m["kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"], m["kubeproxy_sync_proxy_rules_last_timestamp_seconds"]
		if queued > unix(written) && synced >= queued {
			c.Queued, c.Synced = queued-unix(written), synced-unix(written)
			return c, nil
		}
		if err := wait(ctx, a, deadline, 20*time.Millisecond); err != nil {
			return c, fmt.Errorf("%s: no sync after the change in the metrics: %w", c.Service, err)
		}
	}
}

// wait sleeps for d, or fails when ctx is done, the deadline passed or the agent died.
func wait(ctx context.Context, a *agent, deadline time.Time, d time.Duration) error {
	switch {
	case a.exited():
		return fmt.Errorf("the agent exited: %v", a.waitErr)
	case time.Now().After(deadline):
		return errors.New("timed out")
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func (r *report) print() {
	fmt.Printf("Switchyard eBPF mode, %d ClusterIP services x %d endpoints (--source=file)\n", r.Services, r.Endpoints)
	if r.ColdStart > 0 {
		fmt.Printf("  cold start to programmed:       %.3f s (agent start to the end of its first sync)\n", r.ColdStart)
		fmt.Printf("  first (full) sync:              %.3f s (kubeproxy_sync_full_proxy_rules_duration_seconds_sum)\n", r.ColdFirstSync)
		c := r.ColdMaps
		fmt.Printf("  kernel maps after it:           %d service entries, %d backend slots, %d cluster-IP entries, %d backends\n",
			c.Frontends, c.Slots, c.AddressOnly, c.Backends)
		fmt.Printf("  agent RSS after cold sync:      %.1f MiB (Go heap in use %.1f MiB)\n", r.RSSCold, r.HeapCold)
	}
	if len(r.Changes) == 0 {
		return
	}
	var p, q, s, pq, qm []float64
	for _, c := range r.Changes {
		q, s, qm = append(q, c.Queued), append(s, c.Synced), append(qm, c.InMap-c.Queued)
		if c.Polled >= 0 {
			p, pq = append(p, c.Polled), append(pq, c.Queued-c.Polled)
		}
	}
	fmt.Printf("  %d one-endpoint changes (each after a random 0-1 s pause), file write ->\n", len(r.Changes))
	fmt.Printf("    in the kernel map:            median %.3f s, max %.3f s  <- change to programmed\n", r.ChangeMedian, r.ChangeMax)
	fmt.Printf("    sync done:                    median %.3f s, max %.3f s\n", median(s), slices.Max(s))
	fmt.Printf("  of which\n")
	if len(p) > 0 {
		fmt.Printf("    waiting for the file poll:    median %.3f s, max %.3f s (the file's atime: ~4 ms resolution)\n", median(p), slices.Max(p))
		fmt.Printf("    read + parse + diff:          median %.3f s, max %.3f s (atime -> kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds)\n", median(pq), slices.Max(pq))
	} else {
		fmt.Printf("    file poll + read + parse:     median %.3f s, max %.3f s (atimes are off here: no split)\n", median(q), slices.Max(q))
	}
	fmt.Printf("    event -> in the kernel map:   median %.4f s, max %.4f s\n", median(qm), slices.Max(qm))
	fmt.Printf("  partial sync (pure sync time):  mean %.2f ms over %d syncs (kubeproxy_sync_partial_proxy_rules_duration_seconds)\n",
		1000*r.PartialSyncMean, r.PartialSyncs)
	fmt.Printf("  network programming latency:    mean %.3f s (kubeproxy_network_programming_duration_seconds)\n", r.NetProgMean)
	fmt.Printf("  full syncs in the run:          %d\n", r.FullSyncs)
	fmt.Printf("  agent RSS after the changes:    %.1f MiB (peak %.1f MiB; Go heap in use %.1f MiB)\n", r.RSSEnd, r.RSSPeak, r.HeapEnd)
	fmt.Printf("  wall time:                      %.1f s\n", r.Wall)
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// mean of a histogram from its _sum and _count.
func mean(m map[string]float64, name string) float64 {
	if n := m[name+"_count"]; n > 0 {
		return m[name+"_sum"] / n
	}
	return 0
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
