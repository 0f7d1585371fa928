package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/test/cluster"
)

// from is where a client runs: a pod of a Deployment, a node, or an external client.
type from struct {
	kind string // "pod", "node" or "external"
	name string // app label, node name or client IP
}

func (f from) String() string { return f.kind + " " + f.name }

// reply is one line of test/cmd/probe.
type reply struct {
	Result   string `json:"result"`
	Endpoint string `json:"endpoint"`
	Peer     string `json:"peer"`
	Error    string `json:"error"`
}

func (r reply) endpointIP() string { return hostOf(r.Endpoint) }
func (r reply) peerIP() string     { return hostOf(r.Peer) }

func hostOf(hostport string) string {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	return h
}

// probe opens n connections (each a new socket) from f to dst and returns what
// each one got.
func (e *env) probe(ctx context.Context, f from, proto, dst string, n int) ([]reply, error) {
	args := []string{"-proto", proto, "-dst", dst, "-n", strconv.Itoa(n), "-timeout", "1s"}
	cmd, err := e.command(ctx, f, e.o.Probe, args...)
	if err != nil {
		return nil, err
	}
	out, err := cluster.Output(cmd)
	if err != nil {
		return nil, fmt.Errorf("probe from %s: %w", f, err)
	}
	var rs []reply
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r reply
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("probe from %s: %q: %w", f, line, err)
		}
		rs = append(rs, r)
	}
	if len(rs) != n {
		return nil, fmt.Errorf("probe from %s: %d results, want %d", f, len(rs), n)
	}
	return rs, nil
}

// command runs name inside f's namespaces (and, for pods and nodes, the node's
// cgroup, where the socket hooks are).
func (e *env) command(ctx context.Context, f from, name string, args ...string) (*exec.Cmd, error) {
	switch f.kind {
	case "pod":
		_, pod, err := e.podIPs(ctx, f.name)
		if err != nil {
			return nil, err
		}
		if pod == "" {
			return nil, fmt.Errorf("no running pod of %s", f.name)
		}
		return e.c.PodCommand(ctx, ns, pod, name, args...)
	case "node":
		return e.c.NodeCommand(ctx, f.name, name, args...), nil
	case "external":
		return e.c.ExternalCommand(ctx, f.name, name, args...), nil
	}
	return nil, fmt.Errorf("unknown client kind %q", f.kind)
}

// httpStatus GETs url from f with curl and returns the status code.
func (e *env) httpStatus(ctx context.Context, f from, url string) (int, error) {
	cmd, err := e.command(ctx, f, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url)
	if err != nil {
		return 0, err
	}
	out, err := cluster.Output(cmd)
	if err != nil {
		return 0, fmt.Errorf("curl %s from %s: %w", url, f, err)
	}
	return strconv.Atoi(strings.TrimSpace(out))
}
