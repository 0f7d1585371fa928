package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/switchyard/switchyard/test/loadgen"
)

// worker runs requests one after another and keeps its own counts.
type worker struct {
	o    options
	req  []byte
	next int // index of the next destination
	buf  [256]byte
	conn net.Conn // mode persistent: the open connection, or nil

	lat        []time.Duration // one per answered request
	conns      int64
	errs       map[string]int64
	firstErr   string
	firstErrAt time.Time
	replies    map[string]int64 // "endpoint peer-ip" -> answers
	broken     int64
	answered   bool      // mode persistent: the open connection has answered
	lastStart  time.Time // when the request under way started
	timeline   timeline
}

func newWorker(o options, req []byte, i int, tl timeline) *worker {
	return &worker{o: o, req: req, next: i % len(o.dsts), errs: map[string]int64{}, replies: map[string]int64{}, timeline: tl}
}

func (w *worker) loop(end time.Time, pace *pacer, stop <-chan struct{}) {
	for time.Now().Before(end) && !closed(stop) && pace.wait(end) {
		w.lastStart = time.Now()
		if w.o.mode == "persistent" {
			w.onePersistent()
		} else {
			w.oneConn()
		}
		if w.o.interval > 0 {
			select {
			case <-time.After(min(w.o.interval, time.Until(end))):
			case <-stop:
			}
		}
	}
	if w.conn != nil {
		w.conn.Close()
	}
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (w *worker) dial() (net.Conn, error) {
	dst := w.o.dsts[w.next]
	w.next = (w.next + 1) % len(w.o.dsts)
	w.conns++
	network := "tcp"
	if w.o.mode == "udp" {
		network = "udp" // connected: a port unreachable fails the read with "connection refused"
	}
	return net.DialTimeout(network, dst, w.o.timeout)
}

// oneConn: connect, one request, its reply, close (in mode udp: a socket, one datagram each way).
func (w *worker) oneConn() {
	start := w.lastStart
	c, err := w.dial()
	if err != nil {
		w.fail(err)
		return
	}
	defer c.Close()
	if err := w.exchange(c, start); err != nil {
		w.fail(err)
	}
}

// onePersistent: one request on the worker's connection, opened first if needed.
func (w *worker) onePersistent() {
	if w.conn == nil {
		c, err := w.dial()
		if err != nil {
			w.fail(err)
			return
		}
		w.conn, w.answered = c, false
	}
	start := w.lastStart
	if err := w.exchange(w.conn, start); err != nil {
		w.fail(err)
		if w.answered {
			w.broken++
			w.timeline.at(start).Broken++
		}
		w.conn.Close()
		w.conn = nil
		return
	}
	w.answered = true
}

// exchange sends the request and reads the reply line "<endpoint> <peer>" (over UDP: one datagram
// each, the echo server's reply ends with its newline).
func (w *worker) exchange(c net.Conn, start time.Time) error {
	if err := c.SetDeadline(start.Add(w.o.timeout)); err != nil {
		return err
	}
	if _, err := c.Write(w.req); err != nil {
		return err
	}
	n := 0
	for {
		m, err := c.Read(w.buf[n:])
		n += m
		if i := bytes.IndexByte(w.buf[:n], '\n'); i >= 0 {
			d := time.Since(start)
			if err := w.record(w.buf[:i]); err != nil {
				return err
			}
			w.lat = append(w.lat, d)
			b := w.timeline.at(start)
			b.Requests++
			b.MaxMs = max(b.MaxMs, float64(d)/float64(time.Millisecond))
			return nil
		}
		switch {
		case errors.Is(err, io.EOF):
			return errors.New("closed without a reply")
		case err != nil:
			return err
		case n == len(w.buf):
			return fmt.Errorf("reply longer than %d bytes", n)
		}
	}
}

// record counts a reply by endpoint and peer address (without the peer's port).
func (w *worker) record(line []byte) error {
	s := string(line)
	ep, peer, ok := strings.Cut(s, " ")
	i := strings.LastIndexByte(peer, ':')
	if !ok || ep == "" || i < 0 {
		return fmt.Errorf("malformed reply %q", s)
	}
	w.replies[s[:len(ep)+1+i]]++
	return nil
}

func (w *worker) fail(err error) {
	kind := loadgen.Kind(err)
	w.errs[kind]++
	w.timeline.at(w.lastStart).ErrorKinds[kind]++
	if w.firstErr == "" {
		w.firstErr, w.firstErrAt = kind+": "+err.Error(), time.Now()
	}
}
