package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// checkRun is the short run every target must pass before it is measured.
const checkRun = 300 * time.Millisecond

// runTarget measures one round of a target in a topology of its own, closed
// before it returns, and adds the results to tr (or sets its Error).
func runTarget(ctx context.Context, e *env, tr *targetReport) {
	if err := measure(ctx, e, tr); err != nil {
		tr.Error = err.Error()
		if ctx.Err() != nil {
			tr.Error = "interrupted (" + tr.Error + ")"
		}
	}
}

func measure(ctx context.Context, e *env, tr *targetReport) (err error) {
	topo, err := buildTopology(ctx, e)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, topo.Close()) }()
	c := benchCase(e.o.pods)
	tr.Destinations = []string{netip.AddrPortFrom(netip.MustParseAddr(nodeIP), nodePort).String()}
	if tr.Target == "direct" {
		tr.Destinations = nil
		for i := range e.o.pods {
			tr.Destinations = append(tr.Destinations, podIP(i)+":"+strconv.Itoa(podPort))
		}
	} else {
		stop, serr := startProxy(ctx, e, topo, c, tr.Target)
		if serr != nil {
			return serr
		}
		defer func() { err = errors.Join(err, stop()) }()
	}
	chk, err := load(ctx, e, topo, tr.Destinations, "conn", checkRun, 1)
	if err != nil {
		return err
	}
	if chk.Requests == 0 || chk.Errors > 0 {
		return fmt.Errorf("check: %s from the external client %s: %d of %d requests answered in %v (first failure: %s)",
			strings.Join(tr.Destinations, ","), clientIP, chk.Requests, chk.Requests+chk.Errors, checkRun, chk.FirstError)
	}
	for _, shape := range e.o.shapes {
		fmt.Fprintf(os.Stderr, "%s: %s for %v\n", tr.Target, shapeLabel[shape], e.o.duration)
		r, err := load(ctx, e, topo, tr.Destinations, shape, e.o.duration, e.o.workers)
		if err != nil {
			return err
		}
		sr := tr.shape(shape)
		sr.Rounds = append(sr.Rounds, r)
	}
	return nil
}
