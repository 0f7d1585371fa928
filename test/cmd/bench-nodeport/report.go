package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// report is the whole run.
type report struct {
	Pods     int            `json:"pods"`
	Workers  int            `json:"workers"`
	Duration float64        `json:"duration_s"` // per target, shape and round
	Rounds   int            `json:"rounds"`
	Targets  []targetReport `json:"targets"`
}

type targetReport struct {
	Target       string        `json:"target"`
	Destinations []string      `json:"destinations"`               // what the client connects to
	UDPDests     []string      `json:"udp_destinations,omitempty"` // and sends to in shape udp
	Error        string        `json:"error,omitempty"`
	Shapes       []shapeReport `json:"shapes,omitempty"`
}

type shapeReport struct {
	Shape string `json:"shape"` // conn, persistent or udp
	// RPS is the median over the rounds of the answered requests per second.
	RPS    float64 `json:"rps"`
	RPSMin float64 `json:"rps_min"`
	RPSMax float64 `json:"rps_max"`
	// VsDirect is RPS over the direct path's, in the same shape (0 when the
	// direct path was not measured).
	VsDirect float64 `json:"vs_direct,omitempty"`
	// Median is the index in Rounds of the median round (its latency, pods and
	// peers are the ones printed).
	Median int           `json:"median_round"`
	Rounds []*loadResult `json:"rounds"`
}

var shapeLabel = map[string]string{"conn": "new connection per request", "persistent": "persistent connections",
	"udp": "UDP, socket per request"}

// shape returns the target's report of a shape, added if new.
func (t *targetReport) shape(name string) *shapeReport {
	for i := range t.Shapes {
		if t.Shapes[i].Shape == name {
			return &t.Shapes[i]
		}
	}
	t.Shapes = append(t.Shapes, shapeReport{Shape: name})
	return &t.Shapes[len(t.Shapes)-1]
}

func (r *report) failed() bool {
	return slices.ContainsFunc(r.Targets, func(t targetReport) bool { return t.Error != "" })
}

// summarize fills the medians, spreads and ratios to the direct path.
func (r *report) summarize() {
	direct := map[string]float64{}
	for i := range r.Targets {
		for j := range r.Targets[i].Shapes {
			s := &r.Targets[i].Shapes[j]
			order := make([]int, len(s.Rounds))
			for k := range order {
				order[k] = k
			}
			slices.SortFunc(order, func(a, b int) int { return cmp.Compare(s.Rounds[a].RPS, s.Rounds[b].RPS) })
			n := len(order)
			s.Median, s.RPSMin, s.RPSMax = order[(n-1)/2], s.Rounds[order[0]].RPS, s.Rounds[order[n-1]].RPS
			s.RPS = (s.Rounds[order[(n-1)/2]].RPS + s.Rounds[order[n/2]].RPS) / 2
			if r.Targets[i].Target == "direct" && r.Targets[i].Error == "" {
				direct[s.Shape] = s.RPS
			}
		}
	}
	for i := range r.Targets {
		for j := range r.Targets[i].Shapes {
			if s := &r.Targets[i].Shapes[j]; direct[s.Shape] > 0 {
				s.VsDirect = s.RPS / direct[s.Shape]
			}
		}
	}
}

func (r *report) print(out io.Writer) {
	fmt.Fprintf(out, "NodePort throughput from an external client: 1 node, %d pod(s), externalTrafficPolicy Cluster, "+
		"%d workers, %gs per target and shape", r.Pods, r.Workers, r.Duration)
	if r.Rounds > 1 {
		fmt.Fprintf(out, ", median of %d rounds", r.Rounds)
	}
	fmt.Fprint(out, "\n\n")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "target\tshape\treq/s\t")
	if r.Rounds > 1 {
		fmt.Fprint(tw, "min-max\t")
	}
	fmt.Fprintln(tw, "vs direct\tlatency mean / p99\terrors\tpods reached (share)\tclient seen by the pods as")
	for _, t := range r.Targets {
		if t.Error != "" {
			continue // printed after the table
		}
		for _, s := range t.Shapes {
			res, errs := s.Rounds[s.Median], int64(0)
			for _, rr := range s.Rounds {
				errs += rr.Errors
			}
			ratio := "-"
			if s.VsDirect > 0 {
				ratio = fmt.Sprintf("%.2f", s.VsDirect)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t", t.Target, shapeLabel[s.Shape], s.RPS)
			if r.Rounds > 1 {
				fmt.Fprintf(tw, "%.0f-%.0f\t", s.RPSMin, s.RPSMax)
			}
			fmt.Fprintf(tw, "%s\t%.3f / %.3f ms\t%d\t%s\t%s\n", ratio, res.MeanMs, res.P99Ms, errs,
				shares(res.Endpoints), strings.Join(byCount(res.Peers), ", "))
		}
	}
	tw.Flush()
	// After the table: a line without tabs would end tabwriter's columns.
	for _, t := range r.Targets {
		if t.Error != "" {
			first, _, _ := strings.Cut(t.Error, "\n")
			fmt.Fprintf(out, "%s: error: %s\n", t.Target, first)
		}
	}
}

// shares is "2 (51/49%)": how many endpoints answered and their shares.
func shares(m map[string]int64) string {
	var total int64
	for _, n := range m {
		total += n
	}
	var pct []string
	for _, k := range byCount(m) {
		pct = append(pct, fmt.Sprintf("%.0f", 100*float64(m[k])/float64(max(total, 1))))
	}
	return fmt.Sprintf("%d (%s%%)", len(m), strings.Join(pct, "/"))
}

// byCount lists the keys, most frequent first.
func byCount(m map[string]int64) []string {
	return slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b], m[a]), strings.Compare(a, b))
	})
}
