package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/cluster"
	"github.com/switchyard/switchyard/test/loadgen"
)

// path is one kind of traffic kept up through a handover: a loadgen run from a
// client to a target, in one of loadgen's modes.
type path struct {
	name string
	from from
	to   target
	mode string // conn (a new TCP connection per request), udp, or persistent
	// opens is the step at whose start the load begins ("": before the first):
	// connections opened while only Switchyard serves the node.
	opens string
	// cut is the step in which losing this path's long-lived connections is the
	// known limit docs/migrate.md explains, not a failure: connections only eBPF
	// mode's tc programs carry, still open when a rollback's drain times out.
	cut string
}

// loadArgs: new connections at a steady rate, or long-lived connections each
// exchanging a message every 100 ms; one timeline slice per 250 ms, so a step's
// window is cut finely; -duration is only a bound, the run is stopped.
func (p path) loadArgs(dst string) []string {
	args := []string{"-dst", dst, "-mode", p.mode, "-duration", "2h", "-timeout", "1s", "-timeline", "250ms"}
	if p.mode == "persistent" {
		return append(args, "-workers", strconv.Itoa(persistentConns), "-interval", "100ms")
	}
	return append(args, "-workers", "8", "-rate", "40")
}

// persistentConns is how many long-lived connections a persistent path keeps.
const persistentConns = 20

// running is a loadgen started for a path.
type running struct {
	p   path
	cmd *exec.Cmd
	out bytes.Buffer
}

// startLoad starts a loadgen for every path that opens at step ("" before the
// first); they run until stopLoad.
func (e *env) startLoad(ctx context.Context, paths []path, step string) ([]*running, error) {
	var rs []*running
	for _, p := range paths {
		if p.opens != step {
			continue
		}
		dst, err := e.addr(ctx, p.to)
		if err != nil {
			stopLoad(rs)
			return nil, err
		}
		cmd, err := e.command(ctx, p.from, e.o.Loadgen, p.loadArgs(dst)...)
		if err != nil {
			stopLoad(rs)
			return nil, err
		}
		r := &running{p: p, cmd: cmd}
		cmd.Stdout = &r.out
		if err := cmd.Start(); err != nil {
			stopLoad(rs)
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// stopLoad ends every run (SIGINT: loadgen finishes the requests under way and
// prints its result) and returns the results in the paths' order.
func stopLoad(rs []*running) ([]loadgen.Result, error) {
	for _, r := range rs {
		r.cmd.Process.Signal(syscall.SIGINT)
	}
	var out []loadgen.Result
	var first error
	for _, r := range rs {
		err := r.cmd.Wait()
		var res loadgen.Result
		if err == nil {
			err = json.Unmarshal(r.out.Bytes(), &res)
		}
		if err != nil && first == nil {
			first = fmt.Errorf("loadgen %s: %w (%q)", r.p.name, err, r.out.String())
		}
		out = append(out, res)
	}
	return out, first
}

// PathCount is what one path saw during one step.
type PathCount struct {
	Path string
	// Cut: this step may cut the path's long-lived connections (path.cut); each
	// one cut fails one request and counts as broken, and nothing else may fail.
	Cut    bool
	Tried  int64            // requests started (answered + failed)
	Failed map[string]int64 // by kind: refused, timeout, error (a reset is an error)
	Broken int64            // long-lived connections lost after they had answered
	MaxMs  float64          // the slowest answer (connect included for new connections)
	// From and To bound the slices that lost something, in seconds from the step's
	// start (each slice is 250 ms, by when its requests started).
	From, To float64
}

// lost says whether the path lost what it may not: a request or a connection
// (beyond a known cut), or it tried nothing.
func (c PathCount) lost() bool {
	if c.Cut {
		return c.failed() != c.Broken || c.Broken > persistentConns || c.Tried == 0
	}
	return c.failed() > 0 || c.Broken > 0 || c.Tried == 0
}

func (c PathCount) failed() int64 {
	var n int64
	for _, k := range c.Failed {
		n += k
	}
	return n
}

// cut splits each run's timeline at the steps' start times: a slice belongs to the
// step it started in (slices before the first step, to the first). A step lists
// the paths whose load had begun by its start.
func cut(runs []*running, results []loadgen.Result, starts []time.Time, names []string) [][]PathCount {
	out := make([][]PathCount, len(starts))
	idx := make([][]int, len(starts)) // idx[step][run]: the run's place in out[step], or -1
	for s := range starts {
		for _, r := range runs {
			i := -1
			if opened(r.p, names[:s+1]) {
				i = len(out[s])
				out[s] = append(out[s], PathCount{Path: r.p.name, Failed: map[string]int64{}, Cut: r.p.cut == names[s]})
			}
			idx[s] = append(idx[s], i)
		}
	}
	for ri, r := range results {
		for _, b := range r.Timeline {
			at := time.Unix(0, int64((r.Start+b.At)*1e9))
			s := 0
			for s+1 < len(starts) && !at.Before(starts[s+1]) {
				s++
			}
			if idx[s][ri] < 0 {
				continue
			}
			c := &out[s][idx[s][ri]]
			c.Tried += b.Requests
			lostBefore := c.failed() + c.Broken
			for k, n := range b.ErrorKinds {
				c.Tried += n
				c.Failed[k] += n
			}
			c.Broken += b.Broken
			c.MaxMs = max(c.MaxMs, b.MaxMs)
			if c.failed()+c.Broken > lostBefore {
				rel := at.Sub(starts[s]).Seconds()
				if lostBefore == 0 {
					c.From = rel
				}
				c.To = rel
			}
		}
	}
	return out
}

// warm runs the path's load for a second and fails unless every request was
// answered: the proxy has caught up with the workloads before the measured run.
func (e *env) warm(p path) func(context.Context) error {
	return func(ctx context.Context) error {
		dst, err := e.addr(ctx, p.to)
		if err != nil {
			return err
		}
		args := append(p.loadArgs(dst), "-duration", "1s")
		cmd, err := e.command(ctx, p.from, e.o.Loadgen, args...)
		if err != nil {
			return err
		}
		out, err := cluster.Output(cmd)
		if err != nil {
			return err
		}
		var r loadgen.Result
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			return fmt.Errorf("%s: %w (%q)", p.name, err, out)
		}
		if r.Errors > 0 || r.Requests == 0 {
			return fmt.Errorf("%s: %d answered, %d failed (%s)", p.name, r.Requests, r.Errors, r.FirstError)
		}
		return nil
	}
}

// opened says whether p's load had begun by the last of the steps.
func opened(p path, steps []string) bool {
	return p.opens == "" || slices.Contains(steps, p.opens)
}
