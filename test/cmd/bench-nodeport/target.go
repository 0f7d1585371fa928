package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard/switchyard/test/topology"
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
	tr.Destinations = destinations(tr.Target, "conn", e.o.pods)
	if slices.Contains(e.o.shapes, "udp") {
		tr.UDPDests = destinations(tr.Target, "udp", e.o.pods)
	}
	if tr.Target != "direct" {
		stop, serr := startProxy(ctx, e, topo, c, tr.Target)
		if serr != nil {
			return serr
		}
		defer func() { err = errors.Join(err, stop()) }()
	}
	if err := check(ctx, e, topo, tr.Destinations, "conn"); err != nil {
		return err
	}
	// UDP is a path of its own: checked too when it is measured.
	if tr.UDPDests != nil {
		if err := check(ctx, e, topo, tr.UDPDests, "udp"); err != nil {
			return err
		}
	}
	for _, shape := range e.o.shapes {
		fmt.Fprintf(os.Stderr, "%s: %s for %v\n", tr.Target, shapeLabel[shape], e.o.duration)
		r, err := load(ctx, e, topo, destinations(tr.Target, shape, e.o.pods), shape, e.o.duration, e.o.workers)
		if err != nil {
			return err
		}
		sr := tr.shape(shape)
		sr.Rounds = append(sr.Rounds, r)
	}
	return nil
}

// destinations are what the client sends a shape's requests to: the NodePort of
// its protocol, or for the direct path the pods' ports.
func destinations(target, shape string, pods int) []string {
	np, pp := nodePort, podPort
	if shape == "udp" {
		np, pp = udpNodePort, podUDPPort
	}
	if target != "direct" {
		return []string{netip.AddrPortFrom(netip.MustParseAddr(nodeIP), uint16(np)).String()}
	}
	var dsts []string
	for i := range pods {
		dsts = append(dsts, podIP(i)+":"+strconv.Itoa(pp))
	}
	return dsts
}

// check is the short run in the load generator's mode that must get every
// request answered.
func check(ctx context.Context, e *env, topo *topology.Topology, dsts []string, mode string) error {
	chk, err := load(ctx, e, topo, dsts, mode, checkRun, 1)
	if err != nil {
		return err
	}
	if chk.Requests == 0 || chk.Errors > 0 {
		return fmt.Errorf("check: %s (%s) from the external client %s: %d of %d requests answered in %v (first failure: %s)",
			strings.Join(dsts, ","), mode, clientIP, chk.Requests, chk.Requests+chk.Errors, checkRun, chk.FirstError)
	}
	return nil
}
