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
	for _, bad := range [][]string{
		{}, {"-dst", "10.0.1.1"}, {"-dst", "10.0.1.1:80", "-mode", "udp"}, {"-dst", "10.0.1.1:80", "-workers", "0"},
		{"-dst", "10.0.1.1:80", "-size", "0"}, {"-dst", "10.0.1.1:80", "-interval", "-1s"}, {"-dst", "10.0.1.1:80", "extra"},
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
	w := newWorker(o, []byte("abc\n"), 0)
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
	r := merge(o, []*worker{w}, time.Second)
	if r.Requests != 2 || r.Errors != 2 || r.Endpoints["10.0.1.1:8080"] != 2 || r.Peers["192.168.0.2"] != 2 ||
		r.ErrorKinds["error"] != 2 || r.FirstError != `error: malformed reply "junk"` || r.RPS != 2 {
		t.Errorf("%+v", r)
	}
}
