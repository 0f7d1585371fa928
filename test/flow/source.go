package flow

import (
	"net/netip"
	"slices"
	"strings"
)

// SourceKind is where a flow's client runs.
type SourceKind int

const (
	// PodSource: a client pod on the node under test (an address in clusterCIDR).
	PodSource SourceKind = iota
	// EndpointSource: the endpoint's own pod (hairpin), on whichever node it runs.
	EndpointSource
	// NodeSource: the node itself, bound to a node address or loopback.
	NodeSource
	// ExternalSource: a client outside the cluster, routed to the node.
	ExternalSource
)

func (k SourceKind) String() string {
	return [...]string{"pod", "endpoint pod", "node", "external client"}[k]
}

// PodSpec is a pod the topology needs: every endpoint, and every client pod.
type PodSpec struct {
	IP    string
	Local bool // on the node under test
	TCP   []int
	UDP   []int
}

// SourceKind classifies a flow's source address.
func (c *Case) SourceKind(ip string) SourceKind {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ExternalSource
	}
	a = a.Unmap()
	if a.IsLoopback() || slices.ContainsFunc(c.Node.IPs, func(s string) bool { return sameAddr(s, a) }) {
		return NodeSource
	}
	for _, p := range c.endpointPods() {
		if sameAddr(p.IP, a) {
			return EndpointSource
		}
	}
	for _, s := range strings.Split(c.Config.ClusterCIDR, ",") {
		if cidr, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil && cidr.Contains(a) {
			return PodSource
		}
	}
	return ExternalSource
}

func sameAddr(s string, a netip.Addr) bool {
	b, err := netip.ParseAddr(s)
	return err == nil && b.Unmap() == a
}

// Pods lists the pods a case needs: one per endpoint address (with the ports its
// slices list) and one per pod-source client.
func (c *Case) Pods() []PodSpec {
	pods := c.endpointPods()
	for _, f := range c.Flows {
		if c.SourceKind(f.SourceIP) == PodSource && !slices.ContainsFunc(pods, func(p PodSpec) bool { return p.IP == f.SourceIP }) {
			pods = append(pods, PodSpec{IP: f.SourceIP, Local: true})
		}
	}
	return pods
}

func (c *Case) endpointPods() []PodSpec {
	var pods []PodSpec
	idx := map[string]int{}
	for _, s := range c.EndpointSlices {
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			ip := e.Addresses[0]
			i, ok := idx[ip]
			if !ok {
				i = len(pods)
				idx[ip] = i
				pods = append(pods, PodSpec{IP: ip, Local: e.NodeName != nil && *e.NodeName == c.Node.Name})
			}
			for _, p := range s.Ports {
				if strings.EqualFold(orDefault(p.Protocol, "TCP"), "UDP") {
					pods[i].UDP = appendPort(pods[i].UDP, int(p.Port))
				} else {
					pods[i].TCP = appendPort(pods[i].TCP, int(p.Port))
				}
			}
		}
	}
	return pods
}

func appendPort(ports []int, p int) []int {
	if slices.Contains(ports, p) {
		return ports
	}
	return append(ports, p)
}

// ExternalClients lists the addresses of the external clients a case needs.
func (c *Case) ExternalClients() []string {
	var out []string
	for _, f := range c.Flows {
		if c.SourceKind(f.SourceIP) == ExternalSource && !slices.Contains(out, f.SourceIP) {
			out = append(out, f.SourceIP)
		}
	}
	return out
}
