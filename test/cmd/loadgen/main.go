// Command loadgen is the benchmark client. It runs inside a network namespace (as a subprocess:
// never from the benchmark process) and sends requests to the request/reply ports of echo servers
// (test/cmd/echo -tcp-rr) for a fixed time:
//
//	loadgen -dst IP:PORT[,IP:PORT...] [-mode conn|persistent] [-duration 5s] [-workers 4] [-timeout 1s] [-size 32] [-interval 0]
//
// Mode conn opens a new TCP connection per request: connect, send one line, read the reply line,
// close. Mode persistent keeps one connection per worker and sends request after request on it
// (a failed connection is replaced). Each new connection goes to the next destination in turn.
// With -interval, each worker pauses that long after every request (a paced client, such as one
// keeping a few long-lived connections busy across a restart, instead of a benchmark's flood).
// Workers start no request after -duration; the ones in flight finish (bounded by -timeout).
//
// It prints one JSON object (see result) and exits 0 whatever the outcome; 2 means bad usage.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
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
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage: loadgen -dst IP:PORT[,...] [-mode conn|persistent] [-duration 5s] [-workers 4] [-timeout 1s] [-size 32] [-interval 0]:", err)
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(run(o)); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: write:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	dst := fs.String("dst", "", "destinations IP:PORT, comma-separated (taken in turn)")
	o := options{}
	fs.StringVar(&o.mode, "mode", "conn", "conn (a new connection per request) or persistent")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "how long to send requests")
	fs.DurationVar(&o.timeout, "timeout", time.Second, "per request (connect included)")
	fs.IntVar(&o.workers, "workers", 4, "concurrent connections")
	fs.IntVar(&o.size, "size", 32, "request size in bytes, newline included")
	fs.DurationVar(&o.interval, "interval", 0, "pause of each worker after every request (0: none)")
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
	if o.mode != "conn" && o.mode != "persistent" || o.duration <= 0 || o.timeout <= 0 || o.workers < 1 ||
		o.size < 1 || o.size > 1024 || o.interval < 0 || fs.NArg() > 0 {
		return o, fmt.Errorf("bad -mode, -duration, -timeout, -workers, -size (1..1024), -interval or extra arguments")
	}
	return o, nil
}

func run(o options) result {
	req := make([]byte, o.size)
	for i := range req {
		req[i] = 'a' + byte(i%26)
	}
	req[len(req)-1] = '\n'
	start := time.Now()
	end := start.Add(o.duration)
	ws := make([]*worker, o.workers)
	var wg sync.WaitGroup
	for i := range ws {
		ws[i] = newWorker(o, req, i)
		wg.Go(func() { ws[i].loop(end) })
	}
	wg.Wait()
	return merge(o, ws, time.Since(start))
}

// merge adds up the workers' counts.
func merge(o options, ws []*worker, elapsed time.Duration) result {
	r := result{Mode: o.mode, Workers: o.workers, Elapsed: elapsed.Seconds(),
		ErrorKinds: map[string]int64{}, Endpoints: map[string]int64{}, Peers: map[string]int64{}}
	var lat []time.Duration
	for _, w := range ws {
		r.Requests += int64(len(w.lat))
		r.Conns += w.conns
		lat = append(lat, w.lat...)
		for k, n := range w.errs {
			r.ErrorKinds[k] += n
			r.Errors += n
		}
		if r.FirstError == "" {
			r.FirstError = w.firstErr
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
