package dataplane

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
)

// PrintBackend writes the whole desired state as a table on every sync: the dry
// run that shows what Switchyard would program. It installs nothing.
type PrintBackend struct {
	mu  sync.Mutex
	out io.Writer
	n   int
}

// NewPrintBackend returns a print backend writing to out.
func NewPrintBackend(out io.Writer) *PrintBackend { return &PrintBackend{out: out} }

func (p *PrintBackend) Name() string { return "print" }

func (p *PrintBackend) Cleanup(context.Context) error { return nil }

func (p *PrintBackend) Sync(_ context.Context, st *State, changes *ChangeSet) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	kind := "full"
	if changes != nil {
		kind = fmt.Sprintf("partial, %d frontends changed", len(changes.Frontends))
	}
	fmt.Fprintf(p.out, "# sync %d (%s): node %s %v, %d services, %d frontends\n",
		p.n, kind, st.Node.Name, st.Node.IPs, len(st.Services), len(st.Frontends))
	fmt.Fprintln(p.out, "# (L) endpoint on this node, (T) terminating, +masq: SNAT to the node; ! a problem with the service")
	return WriteTable(p.out, st)
}

// WriteTable writes one row per frontend. The three client columns say what a new
// connection from a pod, from the node itself and from outside the node gets: the
// backends (T marks a terminating one, L one on this node), REJECT or DROP, and
// "+masq" when it is SNATed to the node.
func WriteTable(out io.Writer, st *State) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tTYPE\tFRONTEND\tFROM POD\tFROM NODE\tFROM OUTSIDE\tOPTIONS")
	for _, f := range st.SortedFrontends() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Service, f.Type, f.FrontendKey,
			routeString(&f.Pod), routeString(&f.Host), routeString(&f.Outside), options(f))
	}
	for _, sv := range sortedServices(st) {
		for _, p := range sv.Problems {
			fmt.Fprintf(tw, "! %s\t%s: %s\n", sv.Name, p.Reason, p.Message)
		}
	}
	return tw.Flush()
}

func sortedServices(st *State) []*ServiceState {
	out := make([]*ServiceState, 0, len(st.Services))
	for _, s := range st.Services {
		out = append(out, s)
	}
	sortServices(out)
	return out
}

func routeString(r *Route) string {
	if r.Verdict != Forward {
		return r.Verdict.String()
	}
	parts := make([]string, len(r.Backends))
	for i, b := range r.Backends {
		parts[i] = b.AddrPort().String()
		var marks string
		if b.Local {
			marks += "L"
		}
		if b.Terminating {
			marks += "T"
		}
		if marks != "" {
			parts[i] += "(" + marks + ")"
		}
	}
	s := strings.Join(parts, ",")
	if r.Masquerade {
		s += " +masq"
	}
	return s
}

func options(f *FrontendState) string {
	var o []string
	if f.Affinity > 0 {
		o = append(o, fmt.Sprintf("affinity=ClientIP/%s", f.Affinity))
	}
	if f.InternalTrafficLocal {
		o = append(o, "iTP=Local")
	}
	if f.ExternalTrafficLocal {
		o = append(o, "eTP=Local")
	}
	if len(f.SourceRanges) > 0 {
		r := make([]string, len(f.SourceRanges))
		for i, p := range f.SourceRanges {
			r[i] = p.String()
		}
		o = append(o, "sourceRanges="+strings.Join(r, ","))
	}
	if f.HealthCheckNodePort != 0 {
		o = append(o, fmt.Sprintf("healthCheckNodePort=%d", f.HealthCheckNodePort))
	}
	if len(o) == 0 {
		return "-"
	}
	return strings.Join(o, " ")
}
