package main

import (
	"bufio"
	"net"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-dst", "10.0.1.1:8080, 10.0.1.2:8080", "-mode", "persistent", "-workers", "2", "-interval", "100ms"})
	if err != nil || len(o.dsts) != 2 || o.mode != "persistent" || o.workers != 2 || o.size != 32 || o.interval != 100*time.Millisecond {
		t.Errorf("%+v, %v", o, err)
	}
	o, err = parseFlags([]string{"-dst", "10.0.1.1:5353", "-mode", "udp", "-rate", "1000"})
	if err != nil || o.mode != "udp" || o.rate != 1000 {
		t.Errorf("%+v, %v", o, err)
	}
	for _, bad := range [][]string{
		{}, {"-dst", "10.0.1.1"}, {"-dst", "10.0.1.1:80", "-mode", "sctp"}, {"-dst", "10.0.1.1:80", "-workers", "0"},
		{"-dst", "10.0.1.1:80", "-size", "0"}, {"-dst", "10.0.1.1:80", "-interval", "-1s"}, {"-dst", "10.0.1.1:80", "extra"},
		{"-dst", "10.0.1.1:80", "-rate", "-1"}, {"-dst", "10.0.1.1:80", "-mode", "persistent", "-rate", "10"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// A worker's exchanges over an in-memory connection (no network): replies are counted by
// endpoint and peer address, a malformed reply or a close is an error, and merge adds it all up.
func TestExchangeAndMerge(t *testing.T) {
	o := options{dsts: []string{"10.0.1.1:8080"}, mode: "persistent", timeout: time.Second, workers: 1, size: 4}
	start := time.Now()
	w := newWorker(o, []byte("abc\n"), 0, newTimeline(start, 0))
	client, server := net.Pipe()
	go func() {
		r := bufio.NewReader(server)
		for _, reply := range []string{"10.0.1.1:8080 192.168.0.2:40000\n", "10.0.1.1:8080 192.168.0.2:40001\n", "junk\n"} {
			if line, err := r.ReadString('\n'); err != nil || line != "abc\n" {
				t.Errorf("request %q, %v", line, err)
			}
			server.Write([]byte(reply))
		}
		r.ReadString('\n')
		server.Close()
	}()
	for range 4 {
		if err := w.exchange(client, time.Now()); err != nil {
			w.fail(err)
		}
	}
	r := merge(o, []*worker{w}, start, start.Add(time.Second))
	if r.Requests != 2 || r.Errors != 2 || r.Endpoints["10.0.1.1:8080"] != 2 || r.Peers["192.168.0.2"] != 2 ||
		r.ErrorKinds["error"] != 2 || r.FirstError != `error: malformed reply "junk"` || r.FirstErrorAt <= 0 || r.RPS != 2 {
		t.Errorf("%+v", r)
	}
}

// The pacer hands out start times k/rate apart, to whichever worker asks, and none at or after the
// end: here 10 per second over the second that has just passed, so nobody waits.
func TestPacer(t *testing.T) {
	end := time.Now()
	p := newPacer(end.Add(-time.Second), 10)
	for k := range 10 {
		if !p.wait(end) {
			t.Fatalf("start #%d refused", k)
		}
	}
	if p.wait(end) {
		t.Error("a start at the end given out")
	}
	if newPacer(end, 0) != nil || !(*pacer)(nil).wait(end) {
		t.Error("rate 0: paced")
	}
}

// Mode persistent: a connection that answered and then fails is broken, and -timeline puts each
// request in the slice it started in (one slice here) with the slowest answer.
func TestPersistentBrokenAndTimeline(t *testing.T) {
	o := options{dsts: []string{"10.0.1.1:8080"}, mode: "persistent", timeout: time.Second, workers: 1, size: 4, timeline: time.Hour}
	start := time.Now()
	w := newWorker(o, []byte("abc\n"), 0, newTimeline(start, o.timeline))
	client, server := net.Pipe()
	go func() {
		r := bufio.NewReader(server)
		r.ReadString('\n')
		server.Write([]byte("10.0.1.1:8080 192.168.0.2:40000\n"))
		r.ReadString('\n')
		server.Close()
	}()
	w.conn = client
	for range 2 {
		w.lastStart = time.Now()
		w.onePersistent()
	}
	r := merge(o, []*worker{w}, start, start.Add(time.Second))
	if r.Requests != 1 || r.Errors != 1 || r.Broken != 1 || r.Start != float64(start.UnixNano())/1e9 {
		t.Errorf("%+v", r)
	}
	if len(r.Timeline) != 1 {
		t.Fatalf("timeline %+v, want one slice", r.Timeline)
	}
	b := r.Timeline[0]
	if b.At != 0 || b.Requests != 1 || b.Broken != 1 || b.ErrorKinds["error"] != 1 || b.MaxMs <= 0 {
		t.Errorf("slice %+v", b)
	}
}

// A stop (the signal a caller sends when its run is over) ends a worker's pause between requests
// and its loop, long before -duration: here after one answer, in a pause of an hour.
func TestStopEndsTheRun(t *testing.T) {
	o := options{dsts: []string{"10.0.1.1:8080"}, mode: "persistent", timeout: time.Second, workers: 1, size: 4, interval: time.Hour}
	w := newWorker(o, []byte("abc\n"), 0, newTimeline(time.Now(), 0))
	client, server := net.Pipe()
	stop := make(chan struct{})
	go func() {
		r := bufio.NewReader(server)
		r.ReadString('\n')
		server.Write([]byte("10.0.1.1:8080 192.168.0.2:40000\n"))
		close(stop)
	}()
	w.conn = client
	done := make(chan struct{})
	go func() { w.loop(time.Now().Add(time.Hour), nil, stop); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker is still running after its stop")
	}
	if len(w.lat) != 1 {
		t.Errorf("%d answers, want 1", len(w.lat))
	}
}
