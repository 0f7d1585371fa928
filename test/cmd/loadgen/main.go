// Command loadgen is the benchmark client. It runs inside a network namespace (as a subprocess:
// never from the benchmark process) and sends requests to the request/reply ports of echo servers
// (test/cmd/echo -tcp-rr or -tcp-close; -udp for mode udp) for a fixed time:
//
//	loadgen -dst IP:PORT[,IP:PORT...] [-mode conn|persistent|udp] [-duration 5s] [-workers 4]
//	    [-timeout 1s] [-size 32] [-interval 0] [-rate 0] [-timeline 0]
//
// Mode conn opens a new TCP connection per request: connect, send one line, read the reply line,
// close. Mode persistent keeps one connection per worker and sends request after request on it
// (a failed connection is replaced). Mode udp is mode conn over UDP: a new connected socket per
// request (so an ICMP error fails it), the line as one datagram, the reply datagram, close; each
// socket counts as a connection. Each new connection goes to the next destination in turn.
// With -interval, each worker pauses that long after every request (a paced client, such as one
// keeping a few long-lived connections busy across a restart, instead of a benchmark's flood).
// With -rate (modes conn and udp), the workers together open that many connections per second,
// evenly spaced: the k-th starts k/rate seconds after the start, whichever worker is free, and a
// late one at once, so the schedule sets the total (a steady stream that must outlast a limit,
// instead of as many as the workers manage).
// Workers start no request after -duration, or after a SIGINT or SIGTERM (a caller that cannot
// know how long it needs, such as a handover's steps, runs it long and stops it); the ones in
// flight finish (bounded by -timeout) and the result is printed.
// In mode persistent, a connection that fails after it has answered counts as broken. With
// -timeline, the result also has the run in slices of that length (by when each request
// started) and its start time, so a caller can cut one long run at its own events (the steps of
// a handover) and see what each one cost.
//
// It prints one JSON object (see result) and exits 0 whatever the outcome; 2 means bad usage.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/loadgen"
)

// result is the output; the benchmarks and tests parse it.
type result = loadgen.Result

type options struct {
	dsts     []string
	mode     string
	duration time.Duration
	timeout  time.Duration
	workers  int
	size     int
	interval time.Duration
	rate     int // new connections per second, all workers together (0: as fast as they can)
	timeline time.Duration
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage: loadgen -dst IP:PORT[,...] [-mode conn|persistent|udp] [-duration 5s] [-workers 4] "+
			"[-timeout 1s] [-size 32] [-interval 0] [-rate 0] [-timeline 0]:", err)
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	stop := make(chan struct{})
	go func() { <-sig; close(stop) }()
	if err := json.NewEncoder(os.Stdout).Encode(run(o, stop)); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: write:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	dst := fs.String("dst", "", "destinations IP:PORT, comma-separated (taken in turn)")
	o := options{}
	fs.StringVar(&o.mode, "mode", "conn", "conn (a new connection per request), persistent or udp (a new socket per request)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "how long to send requests")
	fs.DurationVar(&o.timeout, "timeout", time.Second, "per request (connect included)")
	fs.IntVar(&o.workers, "workers", 4, "concurrent connections")
	fs.IntVar(&o.size, "size", 32, "request size in bytes, newline included")
	fs.DurationVar(&o.interval, "interval", 0, "pause of each worker after every request (0: none)")
	fs.IntVar(&o.rate, "rate", 0, "modes conn and udp: new connections per second, all workers together (0: no limit)")
	fs.DurationVar(&o.timeline, "timeline", 0, "also report the run in slices this long (answered, failed by kind, broken, slowest), by when each request started (0: no)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, d := range strings.Split(*dst, ",") {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(d))
		if err != nil {
			return o, fmt.Errorf("-dst: %w", err)
		}
		o.dsts = append(o.dsts, ap.String())
	}
	if !slices.Contains([]string{"conn", "persistent", "udp"}, o.mode) || o.duration <= 0 || o.timeout <= 0 ||
		o.workers < 1 || o.size < 1 || o.size > 1024 || o.interval < 0 || o.timeline < 0 || fs.NArg() > 0 {
		return o, fmt.Errorf("bad -mode, -duration, -timeout, -workers, -size (1..1024), -interval, -timeline or extra arguments")
	}
	if o.rate < 0 || o.rate > 0 && o.mode == "persistent" {
		return o, fmt.Errorf("bad -rate (at least 0, and only for modes conn and udp)")
	}
	return o, nil
}

// run sends requests until -duration has passed or stop is closed.
func run(o options, stop <-chan struct{}) result {
	req := make([]byte, o.size)
	for i := range req {
		req[i] = 'a' + byte(i%26)
	}
	req[len(req)-1] = '\n'
	start := time.Now()
	end := start.Add(o.duration)
	pace := newPacer(start, o.rate)
	ws := make([]*worker, o.workers)
	var wg sync.WaitGroup
	for i := range ws {
		ws[i] = newWorker(o, req, i, newTimeline(start, o.timeline))
		wg.Go(func() { ws[i].loop(end, pace, stop) })
	}
	wg.Wait()
	return merge(o, ws, start, time.Now())
}

// pacer hands out the start times of new connections at a rate: the k-th (from 0) at k/rate after
// the start, whichever worker asks. A nil pacer sets no pace.
type pacer struct {
	start time.Time
	every time.Duration
	taken atomic.Int64
}

func newPacer(start time.Time, rate int) *pacer {
	if rate == 0 {
		return nil
	}
	return &pacer{start: start, every: time.Second / time.Duration(rate)}
}

// wait sleeps until the next start time, and says false instead when that is end or later.
func (p *pacer) wait(end time.Time) bool {
	if p == nil {
		return true
	}
	at := p.start.Add(time.Duration(p.taken.Add(1)-1) * p.every)
	if !at.Before(end) {
		return false
	}
	time.Sleep(time.Until(at))
	return true
}

// merge adds up the counts of the workers that ran from start to end.
func merge(o options, ws []*worker, start, end time.Time) result {
	r := result{Mode: o.mode, Workers: o.workers, Elapsed: end.Sub(start).Seconds(),
		ErrorKinds: map[string]int64{}, Endpoints: map[string]int64{}, Peers: map[string]int64{},
		Start: float64(start.UnixNano()) / 1e9, Timeline: mergeTimelines(ws)}
	var lat []time.Duration
	var firstErrAt time.Time
	for _, w := range ws {
		r.Requests += int64(len(w.lat))
		r.Conns += w.conns
		r.Broken += w.broken
		lat = append(lat, w.lat...)
		for k, n := range w.errs {
			r.ErrorKinds[k] += n
			r.Errors += n
		}
		if w.firstErr != "" && (r.FirstError == "" || w.firstErrAt.Before(firstErrAt)) {
			r.FirstError, firstErrAt = w.firstErr, w.firstErrAt
			r.FirstErrorAt = firstErrAt.Sub(start).Seconds()
		}
		for k, n := range w.replies {
			ep, peer, _ := strings.Cut(k, " ")
			r.Endpoints[ep] += n
			r.Peers[strings.Trim(peer, "[]")] += n
		}
	}
	r.RPS = float64(r.Requests) / r.Elapsed
	if len(lat) > 0 {
		slices.Sort(lat)
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		r.MeanMs = ms(sum / time.Duration(len(lat)))
		r.P50Ms, r.P99Ms = ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100])
	}
	return r
}
