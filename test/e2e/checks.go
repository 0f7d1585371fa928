package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// check is one named proof; short ones also run in make test.
type check struct {
	name  string
	short bool
	run   func(context.Context) error
}

// target is where connections go: a Service's port on its ClusterIP, one of its
// LoadBalancer IPs or a node's IP at its NodePort (resolved when the check runs).
type target struct {
	svc   string
	proto string // "tcp" or "udp"
	via   string // "cluster", "lb:<IP>" or "node:<name>"
}

func (e *env) checks() []check {
	nodes, ext := e.c.Nodes(), e.c.ExternalClients()
	n1, n2 := nodes[0].Name, nodes[len(nodes)-1].Name
	pod, node1, node2 := from{"pod", "client"}, from{"node", n1}, from{"node", n2}
	ext0, ext1 := from{"external", ext[0].IP}, from{"external", ext[1].IP}
	return []check{
		{"clusterip-tcp-from-pod", true, e.reachesAll(pod, target{"echo", "tcp", "cluster"}, "echo")},
		{"clusterip-tcp-from-node", false, e.reachesAll(node1, target{"echo", "tcp", "cluster"}, "echo")},
		{"clusterip-tcp-from-external", false, e.reachesAll(ext0, target{"echo", "tcp", "cluster"}, "echo")},
		{"clusterip-udp-from-pod", true, e.reachesAll(pod, target{"echo", "udp", "cluster"}, "echo")},
		{"clusterip-udp-from-node", false, e.reachesAll(node2, target{"echo", "udp", "cluster"}, "echo")},
		{"nodeport-from-pod", false, e.reachesAll(pod, target{"echo-np", "tcp", "node:" + n1}, "echo")},
		{"nodeport-from-node", false, e.reachesAll(node2, target{"echo-np", "tcp", "node:" + n1}, "echo")},
		{"nodeport-from-external", true, e.reachesAll(ext0, target{"echo-np", "tcp", "node:" + n2}, "echo")},
		{"nodeport-udp-from-external", false, e.reachesAll(ext0, target{"echo-np", "udp", "node:" + n1}, "echo")},
		{"loadbalancer-source-in-range", true, e.reachesAll(ext0, target{"echo-lb", "tcp", "lb:" + lbIP}, "echo")},
		{"loadbalancer-source-out-of-range-dropped", true, e.gets(ext1, target{"echo-lb", "tcp", "lb:" + lbIP}, "timeout")},
		{"local-keeps-client-ip", true, e.keepsClientIP(ext0, target{"solo-local", "tcp", "lb:" + localLBIP}, "solo")},
		{"local-node-without-endpoint-drops", false, e.gets(ext0, target{"solo-local", "tcp", "node:" + n2}, "timeout")},
		{"local-health-check-node-port", true, e.healthCheck(ext0, "solo-local", map[string]int{n1: 200, n2: 503})},
		{"clientip-affinity-from-pod", true, e.sticks(pod, target{"echo-affinity", "tcp", "cluster"})},
		{"clientip-affinity-from-external", false, e.sticks(ext0, target{"echo-affinity", "tcp", "cluster"})},
		{"scaled-to-zero-rejects-and-back", true, e.scaleToZeroAndBack(target{"zero", "tcp", "cluster"}, pod, node1)},
		{"rolling-update-loses-nothing", false, e.rollingUpdate(map[from]target{
			pod: {"echo", "tcp", "cluster"}, node2: {"echo-np", "tcp", "node:" + n1}, ext0: {"echo-lb", "tcp", "lb:" + lbIP},
		})},
	}
}

// addr resolves a target to IP:port.
func (e *env) addr(ctx context.Context, t target) (string, error) {
	s, err := e.cs.CoreV1().Services(ns).Get(ctx, t.svc, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	var port *corev1.ServicePort
	for i := range s.Spec.Ports {
		if string(s.Spec.Ports[i].Protocol) == map[string]string{"tcp": "TCP", "udp": "UDP"}[t.proto] {
			port = &s.Spec.Ports[i]
		}
	}
	if port == nil {
		return "", fmt.Errorf("service %s has no %s port", t.svc, t.proto)
	}
	kind, arg, _ := strings.Cut(t.via, ":")
	switch kind {
	case "cluster":
		return net.JoinHostPort(s.Spec.ClusterIP, strconv.Itoa(int(port.Port))), nil
	case "lb":
		return net.JoinHostPort(arg, strconv.Itoa(int(port.Port))), nil
	case "node":
		n, ok := e.c.Node(arg)
		if !ok || port.NodePort == 0 {
			return "", fmt.Errorf("service %s: no NodePort on node %q", t.svc, arg)
		}
		return net.JoinHostPort(n.IP, strconv.Itoa(int(port.NodePort))), nil
	}
	return "", fmt.Errorf("bad target %q", t.via)
}

// connect resolves t and probes it n times from f.
func (e *env) connect(ctx context.Context, f from, t target, n int) ([]reply, string, error) {
	dst, err := e.addr(ctx, t)
	if err != nil {
		return nil, "", err
	}
	rs, err := e.probe(ctx, f, t.proto, dst, n)
	return rs, dst, err
}

// allOK fails unless every reply is "ok"; it returns the endpoint IPs seen.
func allOK(rs []reply, what string) (map[string]bool, error) {
	seen := map[string]bool{}
	for _, r := range rs {
		if r.Result != "ok" {
			return nil, fmt.Errorf("%s: got %s %s (%d connections)", what, r.Result, r.Error, len(rs))
		}
		seen[r.endpointIP()] = true
	}
	return seen, nil
}

// reachesAll: 20 connections all answered, by every pod of app and nothing else,
// within the time a proxy takes to follow the EndpointSlices (a Deployment is
// available before they and every node's proxy have caught up).
func (e *env) reachesAll(f from, t target, app string) func(context.Context) error {
	return func(ctx context.Context) error {
		return e.eventually(ctx, e.reachesAllNow(f, t, app))
	}
}

func (e *env) reachesAllNow(f from, t target, app string) func(context.Context) error {
	return func(ctx context.Context) error {
		rs, dst, err := e.connect(ctx, f, t, 20)
		if err != nil {
			return err
		}
		seen, err := allOK(rs, fmt.Sprintf("%s -> %s %s", f, t.proto, dst))
		if err != nil {
			return err
		}
		want, _, err := e.podIPs(ctx, app)
		if err != nil {
			return err
		}
		if !maps.Equal(seen, want) {
			return fmt.Errorf("%s -> %s: answered by %v, want every pod of %s: %v", f, dst, keys(seen), app, keys(want))
		}
		return nil
	}
}

// gets: 3 connections, each with the result want (timeout for a DROP, refused for
// a REJECT).
func (e *env) gets(f from, t target, want string) func(context.Context) error {
	return func(ctx context.Context) error {
		rs, dst, err := e.connect(ctx, f, t, 3)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Result != want {
				return fmt.Errorf("%s -> %s %s: got %s %s %s, want %s", f, t.proto, dst, r.Result, r.Endpoint, r.Error, want)
			}
		}
		return nil
	}
}

// keepsClientIP: externalTrafficPolicy Local delivers without SNAT, to a local pod.
func (e *env) keepsClientIP(f from, t target, app string) func(context.Context) error {
	return func(ctx context.Context) error {
		rs, dst, err := e.connect(ctx, f, t, 10)
		if err != nil {
			return err
		}
		if _, err := allOK(rs, fmt.Sprintf("%s -> %s", f, dst)); err != nil {
			return err
		}
		want, _, err := e.podIPs(ctx, app)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.peerIP() != f.name || !want[r.endpointIP()] {
				return fmt.Errorf("%s -> %s: the pod %s saw the client as %s, want %s from a pod of %s", f, dst, r.Endpoint, r.Peer, f.name, app)
			}
		}
		return nil
	}
}

// sticks: with ClientIP affinity, 20 new connections from one client reach one pod.
func (e *env) sticks(f from, t target) func(context.Context) error {
	return func(ctx context.Context) error {
		rs, dst, err := e.connect(ctx, f, t, 20)
		if err != nil {
			return err
		}
		seen, err := allOK(rs, fmt.Sprintf("%s -> %s", f, dst))
		if err != nil {
			return err
		}
		if len(seen) != 1 {
			return fmt.Errorf("%s -> %s with ClientIP affinity: answered by %v, want one pod", f, dst, keys(seen))
		}
		return nil
	}
}

// healthCheck GETs the service's health check node port on every node: want maps a
// node to its status (200 with a local endpoint, 503 without).
func (e *env) healthCheck(f from, svc string, want map[string]int) func(context.Context) error {
	return func(ctx context.Context) error {
		s, err := e.cs.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s.Spec.HealthCheckNodePort == 0 {
			return fmt.Errorf("service %s has no health check node port", svc)
		}
		var errs []error
		for node, code := range want {
			n, _ := e.c.Node(node)
			url := fmt.Sprintf("http://%s/", net.JoinHostPort(n.IP, strconv.Itoa(int(s.Spec.HealthCheckNodePort))))
			got, err := e.httpStatus(ctx, f, url)
			if err != nil {
				errs = append(errs, err)
			} else if got != code {
				errs = append(errs, fmt.Errorf("%s on %s: HTTP %d, want %d", url, node, got, code))
			}
		}
		return errors.Join(errs...)
	}
}

func keys(m map[string]bool) []string {
	return slices.Sorted(maps.Keys(m))
}
