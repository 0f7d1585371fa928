package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// report is the whole run.
type report struct {
	Endpoints int      `json:"endpoints_per_service"`
	Changes   int      `json:"changes"`
	Pause     float64  `json:"pause_s"`
	Results   []result `json:"results"`
}

func (r *report) failed() bool {
	return slices.ContainsFunc(r.Results, func(x result) bool { return x.Error != "" })
}

// print writes one Markdown table per size, a column per proxy.
func (r *report) print(w io.Writer) {
	var sizes []int
	for _, x := range r.Results {
		if !slices.Contains(sizes, x.Services) {
			sizes = append(sizes, x.Services)
		}
	}
	for _, n := range sizes {
		var rs []result
		for _, x := range r.Results {
			if x.Services == n {
				rs = append(rs, x)
			}
		}
		fmt.Fprintf(w, "\n%s ClusterIP services x %d endpoints; %d changes, %.0f s apart (endpoint replaced / Service created, alternating)\n\n",
			thousands(n), r.Endpoints, r.Changes, r.Pause)
		printTable(w, rs)
		for _, x := range rs {
			if x.Error != "" {
				fmt.Fprintf(w, "\n%s: error: %s\n", x.Proxy, x.Error)
			}
			for _, c := range x.Changes {
				if c.Error != "" || (c.Reached != "" && c.Reached != "ok") {
					fmt.Fprintf(w, "%s: change %d (%s %s): %s %s\n", x.Proxy, c.K, c.Kind, c.Target, c.Error, c.Reached)
				}
			}
		}
	}
}

func printTable(w io.Writer, rs []result) {
	head := []string{""}
	for _, x := range rs {
		head = append(head, x.Proxy)
	}
	row := func(name string, f func(x result) string) {
		cells := []string{name}
		for _, x := range rs {
			switch {
			case x.Error != "" && x.ColdStart == 0:
				cells = append(cells, "error")
			case x.ColdDNF > 0:
				cells = append(cells, "-")
			default:
				cells = append(cells, f(x))
			}
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
	cells := []string{"cold start to full ruleset"}
	for _, x := range rs {
		switch {
		case x.ColdDNF > 0:
			cells = append(cells, "did not finish in "+time.Duration(x.ColdDNF*float64(time.Second)).String())
		case x.Error != "" && x.ColdStart == 0:
			cells = append(cells, "error")
		default:
			cells = append(cells, fmt.Sprintf("%.2f s", x.ColdStart))
		}
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	row("  of which the first sync", func(x result) string { return fmt.Sprintf("%.2f s", x.FirstSync) })
	all := func(x result) []changeResult { return x.Changes }
	kind := func(k string) func(x result) []changeResult {
		return func(x result) []changeResult {
			return slices.DeleteFunc(slices.Clone(x.Changes), func(c changeResult) bool { return c.Kind != k })
		}
	}
	inKernel := func(c changeResult) float64 { return c.InKernel }
	row("change -> rule in the kernel (median / max)", spread(all, inKernel))
	row("  endpoint replaced in a slice", spread(kind("endpoint"), inKernel))
	row("  Service created", spread(kind("service"), inKernel))
	row("change -> end of the proxy's sync (metric)", spread(all, func(c changeResult) float64 { return c.Synced }))
	row("network programming latency (metric, mean)", func(x result) string { return fmt.Sprintf("%.3f s", x.NetProg) })
	row("API write (median / max)", spread(all, func(c changeResult) float64 { return c.Write }))
	row("created Services reached from a pod", func(x result) string {
		ok, n := 0, 0
		for _, c := range x.Changes {
			if c.Kind == "service" {
				n++
				if c.Reached == "ok" {
					ok++
				}
			}
		}
		return fmt.Sprintf("%d/%d", ok, n)
	})
	row("RSS after cold start / after changes / peak", func(x result) string {
		return fmt.Sprintf("%.0f / %.0f / %.0f MiB", x.RSSCold, x.RSSEnd, x.RSSPeak)
	})
	row("one rule check: iptables -t nat -S of 2 chains (median)", func(x result) string {
		return fmt.Sprintf("%.3f s (iptables-%s)", x.RuleCheck, x.Variant)
	})
}

// spread formats the median and max of a value over some changes.
func spread(pick func(result) []changeResult, v func(changeResult) float64) func(result) string {
	return func(x result) string {
		var xs []float64
		for _, c := range pick(x) {
			if c.Error == "" && v(c) >= 0 {
				xs = append(xs, v(c))
			}
		}
		if len(xs) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f / %.3f s (%d)", median(xs), slices.Max(xs), len(xs))
	}
}

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

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
