package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/loadgen"
	"github.com/switchyard/switchyard/test/topology"
)

// The cluster: one node, its pods, one external client on the outside segment,
// and one NodePort service (externalTrafficPolicy Cluster: masqueraded).
const (
	nodeName    = "node-a"
	nodeIP      = "192.168.0.2"
	clientIP    = "203.0.113.10"
	clusterCIDR = "10.0.0.0/16"
	clusterIP   = "172.30.0.10"
	svcPort     = 80
	podPort     = 8080
	nodePort    = 30080
	// The UDP port of the service (shape udp): the pods' echo -udp.
	svcUDPPort  = 53
	podUDPPort  = 5353
	udpNodePort = 30053
)

func podIP(i int) string { return fmt.Sprintf("10.0.1.%d", i+1) }

// benchCase is the cluster as a flow case: the objects both proxies are fed.
func benchCase(pods int) flow.Case {
	c := flow.Case{
		Name:   "bench-nodeport",
		Node:   flow.Node{Name: nodeName, IPs: []string{nodeIP}},
		Config: flow.Config{ClusterCIDR: clusterCIDR},
		Services: []flow.Service{{Namespace: "bench", Name: "web", Type: "NodePort", ClusterIP: clusterIP,
			ExternalTrafficPolicy: "Cluster",
			Ports: []flow.ServicePort{
				{Name: "rr", Protocol: "TCP", Port: svcPort, TargetPort: podPort, NodePort: nodePort},
				{Name: "udp", Protocol: "UDP", Port: svcUDPPort, TargetPort: podUDPPort, NodePort: udpNodePort},
			}}},
	}
	sl := flow.EndpointSlice{Namespace: "bench", Service: "web", Name: "web-1", AddressType: "IPv4",
		Ports: []flow.EndpointPort{{Name: "rr", Protocol: "TCP", Port: podPort},
			{Name: "udp", Protocol: "UDP", Port: podUDPPort}}}
	for i := range pods {
		sl.Endpoints = append(sl.Endpoints, flow.Endpoint{Addresses: []string{podIP(i)}, Ready: ptr.To(true), NodeName: ptr.To(nodeName)})
	}
	c.EndpointSlices = []flow.EndpointSlice{sl}
	return c
}

// buildTopology builds a fresh node with the pods' request/reply servers (TCP and
// UDP) running and the external client tuned for many short connections.
func buildTopology(ctx context.Context, e *env) (*topology.Topology, error) {
	sc := topology.Scenario{
		Node:     topology.Node{Name: nodeName, IPs: []string{nodeIP}},
		External: []topology.Client{{IP: clientIP}},
		EchoBin:  e.echoBin,
	}
	for i := range e.o.pods {
		sc.Pods = append(sc.Pods, topology.Pod{Name: fmt.Sprintf("pod%d", i), IP: podIP(i), Local: true,
			Ports: []topology.Port{{Protocol: topology.ProtocolTCPRequestReply, Port: podPort},
				{Protocol: "UDP", Port: podUDPPort}}})
	}
	topo, err := topology.Build(ctx, sc)
	if err != nil {
		return nil, err
	}
	if err = topo.AssertIsolated(); err == nil {
		// Mode conn closes from the client side: each connection leaves a TIME_WAIT socket
		// there. Let connect() reuse them after a second (tcp_tw_reuse_delay), from a wide
		// port range, or the client runs out of ports within seconds. Per namespace.
		_, err = topo.Run(ctx, topo.ExternalNS(clientIP), "sh", "-c",
			"echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse && echo '1024 65535' > /proc/sys/net/ipv4/ip_local_port_range")
	}
	if err != nil {
		return nil, errors.Join(err, topo.Close())
	}
	return topo, nil
}

// load runs the load generator in the external client's namespace and parses its result.
func load(ctx context.Context, e *env, topo *topology.Topology, dsts []string, mode string, d time.Duration, workers int) (*loadResult, error) {
	args := []string{"-dst", strings.Join(dsts, ","), "-mode", mode, "-duration", d.String(),
		"-workers", strconv.Itoa(workers), "-timeout", e.o.timeout.String()}
	ctx, cancel := context.WithTimeout(ctx, d+e.o.timeout+30*time.Second)
	defer cancel()
	cmd := topo.CommandContext(ctx, topo.ExternalNS(clientIP), e.loadgenBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("loadgen %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("loadgen output %q: %w", out, err)
	}
	return &r, nil
}

// loadResult is test/cmd/loadgen's output.
type loadResult = loadgen.Result
