package topology

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ProbeResult is one line of the probe's output (see test/cmd/probe).
type ProbeResult struct {
	// Result is "ok", "refused", "timeout" or "error".
	Result string `json:"result"`
	// Endpoint is the server's local address as the server saw it (ip:port).
	Endpoint string `json:"endpoint,omitempty"`
	// Peer is the client address the server saw: differs from Local when something NATs.
	Peer string `json:"peer,omitempty"`
	// Local is the probe's own socket address.
	Local string `json:"local,omitempty"`
	Error string `json:"error,omitempty"`
}

// ProbeOptions are the probe's optional flags.
type ProbeOptions struct {
	Src     string        // source IP, or IP:PORT, to bind
	Timeout time.Duration // per connection; 0 means the probe's default (1s)
	N       int           // sequential new connections; 0 means 1
}

// Probe runs Scenario.ProbeBin inside ns: proto is "tcp" or "udp", dst is "ip:port". It returns one
// result per connection; an error means the probe itself could not run.
func (t *Topology) Probe(ctx context.Context, ns, proto, dst string, o ProbeOptions) ([]ProbeResult, error) {
	if t.Scenario.ProbeBin == "" {
		return nil, errors.New("Scenario.ProbeBin is empty")
	}
	args := []string{"-proto", proto, "-dst", dst}
	if o.Src != "" {
		args = append(args, "-src", o.Src)
	}
	if o.Timeout > 0 {
		args = append(args, "-timeout", o.Timeout.String())
	}
	if o.N > 0 {
		args = append(args, "-n", strconv.Itoa(o.N))
	}
	// Stdout only: it is the JSON; stderr (usage errors) goes into the error.
	out, err := t.CommandContext(ctx, ns, t.Scenario.ProbeBin, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return nil, fmt.Errorf("in %s: %s: %w: %s", ns, cmdline(t.Scenario.ProbeBin, args), err,
			strings.TrimSpace(string(stderr)))
	}
	return parseProbe(string(out))
}

func parseProbe(out string) ([]ProbeResult, error) {
	var res []ProbeResult
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var r ProbeResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("probe output line %q: %w", sc.Text(), err)
		}
		res = append(res, r)
	}
	return res, sc.Err()
}

// HoldUDP runs the probe with -hold inside ns: one UDP socket connected to dst
// that sends nothing. It returns once the socket is connected; the channel then
// delivers what ended the wait (the socket being destroyed, say). Close kills it.
func (t *Topology) HoldUDP(ctx context.Context, ns, dst string) (<-chan ProbeResult, error) {
	cmd := t.CommandContext(ctx, ns, t.Scenario.ProbeBin, "-hold", "-dst", dst)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := t.Start(cmd); err != nil {
		return nil, err
	}
	lines := make(chan ProbeResult, 2)
	sc := bufio.NewScanner(out)
	next := func() (ProbeResult, error) {
		if !sc.Scan() {
			return ProbeResult{}, fmt.Errorf("probe -hold %s in %s: no output (%v)", dst, ns, sc.Err())
		}
		rs, err := parseProbe(sc.Text())
		if err != nil || len(rs) != 1 {
			return ProbeResult{}, fmt.Errorf("probe -hold %s: %q: %v", dst, sc.Text(), err)
		}
		return rs[0], nil
	}
	first, err := next()
	if err != nil {
		return nil, err
	}
	if first.Result != "held" {
		return nil, fmt.Errorf("probe -hold %s in %s: %+v", dst, ns, first)
	}
	go func() {
		defer close(lines)
		if r, err := next(); err == nil {
			lines <- r
		}
	}()
	return lines, nil
}
