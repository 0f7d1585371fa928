// Package loadgen is what the test clients (test/cmd/probe, test/cmd/loadgen) and
// the tools reading their output share: the load generator's result and how a
// failed connection is named.
package loadgen

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// Result is test/cmd/loadgen's output (one JSON object).
type Result struct {
	Mode     string  `json:"mode"`
	Workers  int     `json:"workers"`
	Elapsed  float64 `json:"elapsed_s"`
	Requests int64   `json:"requests"` // answered
	RPS      float64 `json:"rps"`      // answered per second of Elapsed
	Conns    int64   `json:"connections"`
	Errors   int64   `json:"errors"`
	// ErrorKinds counts failures by Kind.
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	FirstError string           `json:"first_error,omitempty"`
	// FirstErrorAt is when the first failure happened, in seconds from the start (a limit that
	// runs out shows as failures from some point on).
	FirstErrorAt float64 `json:"first_error_s,omitempty"`
	// Latency of the answered requests (connect included in mode conn), in milliseconds.
	MeanMs float64 `json:"latency_mean_ms"`
	P50Ms  float64 `json:"latency_p50_ms"`
	P99Ms  float64 `json:"latency_p99_ms"`
	// Endpoints are the server addresses that answered (as the servers saw them), with counts;
	// Peers the client addresses the servers saw (without the port): not this one's when NATed.
	Endpoints map[string]int64 `json:"endpoints"`
	Peers     map[string]int64 `json:"peers"`
	// Broken counts mode persistent's connections that failed after they had answered: a live
	// connection lost, where Errors also counts connects that failed.
	Broken int64 `json:"broken"`
	// Start is when the run started (Unix seconds), so a caller can cut the timeline at its own
	// events; Timeline has a bucket per -timeline of the run, when asked for.
	Start    float64  `json:"start_unix"`
	Timeline []Bucket `json:"timeline,omitempty"`
}

// Bucket is what happened in one slice of a run, by when the request started.
type Bucket struct {
	At         float64          `json:"at_s"` // the slice's start, in seconds from Start
	Requests   int64            `json:"requests"`
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	Broken     int64            `json:"broken,omitempty"`
	// MaxMs is the slowest answered request (connect included in modes conn and udp).
	MaxMs float64 `json:"max_ms"`
}

// Kind names a failed connection as the flow files do: "refused" (a RST, or ICMP
// port unreachable; unreachable errors too, which a REJECT may send), "timeout",
// or "error".
func Kind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH):
		return "refused"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "error"
}
