package topology

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Scenario describes the topology to build.
type Scenario struct {
	// Prefix names every namespace, cgroup and interface of the run: "sy" and 6 hex digits (the
	// package's marker). Empty: random.
	Prefix string
	// Node is the node under test (the one Switchyard runs on).
	Node Node
	// RemoteNode hosts the pods that are not Local. Needed only when there are such pods.
	RemoteNode Node
	Pods       []Pod
	// External are clients outside the cluster.
	External []Client
	// RPFilter is net.ipv4.conf.{all,default}.rp_filter on both nodes (0, 1 or 2).
	RPFilter int
	// EchoBin is the echo server every pod runs (test/cmd/echo). Required when a pod has ports.
	EchoBin string
	// ProbeBin is the client Probe runs (test/cmd/probe). Required only for Probe.
	ProbeBin string
}

// Node is a simulated Kubernetes node.
type Node struct {
	Name string
	// IPs of the node, IPv4 and/or IPv6, each plain (/24 or /64 is assumed) or in CIDR form.
	// The first one of each family is what other hosts route through.
	IPs []string
}

// Pod is a pod with its own network namespace.
type Pod struct {
	Name string
	// IP is the pod IP (IPv4 or IPv6).
	IP string
	// IPv6 is an optional second address, for dual-stack pods whose IP is IPv4.
	IPv6 string
	// Local pods run on the node under test, the others on the remote node.
	Local bool
	Ports []Port
}

// Port is a port the pod's echo server listens on.
type Port struct {
	Protocol string // "TCP", "UDP", ProtocolTCPRequestReply or ProtocolTCPCloseAfterReply
	Port     int
}

// ProtocolTCPRequestReply is the echo server's request/reply mode (echo -tcp-rr):
// every line gets an answer on a connection that stays open, for load generators.
const ProtocolTCPRequestReply = "TCP-RR"

// ProtocolTCPCloseAfterReply is the echo server's close-after-reply mode (echo -tcp-close): the
// first line gets an answer, then the server closes, so the pod's side holds TIME_WAIT.
const ProtocolTCPCloseAfterReply = "TCP-CLOSE"

// Client is a host outside the cluster.
type Client struct {
	IP string
}

var (
	prefixRE  = regexp.MustCompile(`^sy[0-9a-f]{6}$`)
	podNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$`)
)

// NewPrefix returns a fresh random run prefix.
func NewPrefix() (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random prefix: %w", err)
	}
	return "sy" + hex.EncodeToString(b), nil
}

// plan is a validated scenario with every address parsed.
type plan struct {
	s        Scenario
	node     []netip.Prefix
	remote   []netip.Prefix
	pods     [][]netip.Addr // per pod, IP first
	clients  []netip.Addr
	gateways []netip.Prefix // one per family of the node, on the lan bridge
}

func newPlan(s Scenario) (*plan, error) {
	p := &plan{s: s}
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	return p, nil
}

func (p *plan) check() error {
	if !prefixRE.MatchString(p.s.Prefix) {
		return fmt.Errorf("prefix %q does not match %s", p.s.Prefix, prefixRE)
	}
	if p.s.RPFilter < 0 || p.s.RPFilter > 2 {
		return fmt.Errorf("rp_filter %d is not 0, 1 or 2", p.s.RPFilter)
	}
	if len(p.s.Pods) > 999 || len(p.s.External) > 99 {
		return fmt.Errorf("%d pods and %d clients: interface names allow 999 and 99", len(p.s.Pods), len(p.s.External))
	}
	var err error
	if p.node, err = nodePrefixes("node", p.s.Node.IPs); err != nil {
		return err
	}
	if len(p.node) == 0 {
		return fmt.Errorf("the node has no IP")
	}
	if p.remote, err = nodePrefixes("remote node", p.s.RemoteNode.IPs); err != nil {
		return err
	}
	if err := p.checkPods(); err != nil {
		return err
	}
	if err := p.checkClients(); err != nil {
		return err
	}
	p.gateways = gatewaysFor(p.node, p.used())
	return p.checkUnique()
}

func nodePrefixes(what string, ips []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ips {
		pfx, err := parseNodeIP(s)
		if err != nil {
			return nil, fmt.Errorf("%s IP %q: %w", what, s, err)
		}
		out = append(out, pfx)
	}
	return out, nil
}

// parseNodeIP accepts "a.b.c.d" (taken as /24), "x::y" (/64) or a CIDR with the host address.
func parseNodeIP(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Is4() {
		return netip.PrefixFrom(a, 24), nil
	}
	return netip.PrefixFrom(a, 64), nil
}

func (p *plan) checkPods() error {
	seen := map[string]bool{}
	for _, pod := range p.s.Pods {
		if !podNameRE.MatchString(pod.Name) || seen[pod.Name] {
			return fmt.Errorf("pod name %q is invalid or repeated (want %s)", pod.Name, podNameRE)
		}
		seen[pod.Name] = true
		addrs, err := podAddrs(pod)
		if err != nil {
			return err
		}
		if !pod.Local && !p.remoteCanHost(addrs) {
			return fmt.Errorf("pod %s: the node and the remote node need an IP of each family of the pod", pod.Name)
		}
		if err := checkPorts(pod); err != nil {
			return err
		}
		if len(pod.Ports) > 0 && p.s.EchoBin == "" {
			return fmt.Errorf("pod %s has ports but Scenario.EchoBin is empty", pod.Name)
		}
		p.pods = append(p.pods, addrs)
	}
	return nil
}

func podAddrs(pod Pod) ([]netip.Addr, error) {
	a, err := netip.ParseAddr(pod.IP)
	if err != nil {
		return nil, fmt.Errorf("pod %s IP: %w", pod.Name, err)
	}
	out := []netip.Addr{a}
	if pod.IPv6 != "" {
		b, err := netip.ParseAddr(pod.IPv6)
		if err != nil || !b.Is6() || !a.Is4() {
			return nil, fmt.Errorf("pod %s: IPv6 %q must be an IPv6 address next to an IPv4 IP", pod.Name, pod.IPv6)
		}
		out = append(out, b)
	}
	return out, nil
}

func (p *plan) remoteCanHost(addrs []netip.Addr) bool {
	for _, a := range addrs {
		if !firstOf(p.node, a.Is4()).IsValid() || !firstOf(p.remote, a.Is4()).IsValid() {
			return false
		}
	}
	return true
}

func checkPorts(pod Pod) error {
	for _, pt := range pod.Ports {
		if echoFlags[pt.Protocol] == "" || pt.Port < 1 || pt.Port > 65535 {
			return fmt.Errorf("pod %s: bad port %s/%d", pod.Name, pt.Protocol, pt.Port)
		}
	}
	return nil
}

func (p *plan) checkClients() error {
	for _, c := range p.s.External {
		a, err := netip.ParseAddr(c.IP)
		if err != nil {
			return fmt.Errorf("external client IP: %w", err)
		}
		if !firstOf(p.node, a.Is4()).IsValid() {
			return fmt.Errorf("external client %s: the node has no IP of its family to route through", a)
		}
		p.clients = append(p.clients, a)
	}
	return nil
}

// used lists every address of the scenario (gateways excluded).
func (p *plan) used() []netip.Addr {
	var out []netip.Addr
	for _, pfx := range append(append([]netip.Prefix{}, p.node...), p.remote...) {
		out = append(out, pfx.Addr())
	}
	for _, addrs := range p.pods {
		out = append(out, addrs...)
	}
	return append(out, p.clients...)
}

func (p *plan) checkUnique() error {
	seen := map[netip.Addr]bool{}
	all := p.used()
	for _, g := range p.gateways {
		all = append(all, g.Addr())
	}
	for _, a := range all {
		if seen[a] {
			return fmt.Errorf("address %s is used twice", a)
		}
		seen[a] = true
	}
	return nil
}

// firstOf returns the first prefix of the family, or the zero Prefix.
func firstOf(pfxs []netip.Prefix, v4 bool) netip.Prefix {
	for _, p := range pfxs {
		if p.Addr().Is4() == v4 {
			return p
		}
	}
	return netip.Prefix{}
}
