package dataplane

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

const (
	// Services (and their slices) carrying this label belong to another proxy.
	labelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	// defaultAffinityTimeout is the API's default ClientIP timeout (3 hours).
	defaultAffinityTimeout = 10800 * time.Second
)

// Problem is something wrong with a Service that the model worked around. The agent
// logs it and records it as an Event on the Service.
type Problem struct {
	Reason  string // CamelCase, as an Event reason
	Message string
}

// ServiceState is the desired state of one Service on this node.
type ServiceState struct {
	Name      ServiceName
	Frontends []FrontendState // sorted by key
	Problems  []Problem
	// HealthCheckNodePort is non-zero for LoadBalancer services with
	// externalTrafficPolicy Local; the agent answers health checks there.
	HealthCheckNodePort uint16
	// LocalEndpoints counts the distinct ready endpoints on this node (the most of
	// any family), reported by the health check.
	LocalEndpoints int
}

// Skipped reports why kube-proxy would ignore a Service entirely, or "".
func Skipped(svc *v1.Service) string {
	switch {
	case svc.Labels[labelServiceProxyName] != "":
		return "labelled " + labelServiceProxyName
	case svc.Spec.Type == v1.ServiceTypeExternalName:
		return "type ExternalName"
	case svc.Spec.ClusterIP == v1.ClusterIPNone:
		return "headless"
	case svc.Spec.ClusterIP == "":
		return "no cluster IP"
	}
	return ""
}

// ComputeService computes the desired state of one Service from the Service, the
// EndpointSlices that belong to it, this node and the configuration. It returns nil
// for a Service kube-proxy would skip. It is pure: no I/O, no clock.
func ComputeService(svc *v1.Service, sl []*discovery.EndpointSlice, node NodeInfo, cfg Config) *ServiceState {
	if svc == nil || Skipped(svc) != "" {
		return nil
	}
	st := &ServiceState{Name: ServiceName{svc.Namespace, svc.Name}}
	c := svcCommon{svc: svc, node: node, cfg: cfg, st: st}
	c.parse()
	c.checkShape()
	for _, f := range node.Families() {
		c.family(f, sl)
	}
	slices.SortFunc(st.Frontends, func(a, b FrontendState) int { return compareKeys(a.FrontendKey, b.FrontendKey) })
	st.Problems = dedupProblems(st.Problems)
	return st
}

// svcCommon holds what one Service contributes regardless of family.
type svcCommon struct {
	svc  *v1.Service
	node NodeInfo
	cfg  Config
	st   *ServiceState

	externalIPs  []netip.Addr
	lbIPs        []netip.Addr
	sourceRanges []netip.Prefix
	affinity     time.Duration
	etpLocal     bool // kube-proxy's ExternalPolicyLocal (service level)
	itpLocal     bool
}

// detects reports whether family f has a local-traffic detector: kube-proxy's
// exists only for a family with a --cluster-cidr.
func (c *svcCommon) detects(f Family) bool {
	return len(prefixesOfFamily(c.cfg.ClusterCIDRs, f)) > 0
}

func (c *svcCommon) problem(reason, format string, args ...any) {
	c.st.Problems = append(c.st.Problems, Problem{Reason: reason, Message: fmt.Sprintf(format, args...)})
}

func (c *svcCommon) parse() {
	spec := c.svc.Spec
	for _, s := range spec.ExternalIPs {
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			c.problem("InvalidExternalIP", "externalIP %q is not an IP address; ignored", s)
			continue
		}
		c.externalIPs = append(c.externalIPs, ip.Unmap())
	}
	for _, ing := range c.svc.Status.LoadBalancer.Ingress {
		if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeProxy) {
			continue // proxy-mode load balancers deliver to the node, not to the VIP
		}
		ip, err := netip.ParseAddr(ing.IP)
		if err != nil {
			c.problem("InvalidLoadBalancerIP", "load balancer ingress IP %q is not an IP address; ignored", ing.IP)
			continue
		}
		c.lbIPs = append(c.lbIPs, ip.Unmap())
	}
	for _, s := range spec.LoadBalancerSourceRanges {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			c.problem("InvalidSourceRange", "loadBalancerSourceRanges entry %q is not a CIDR; ignored", s)
			continue
		}
		c.sourceRanges = append(c.sourceRanges, p.Masked())
	}
	if spec.SessionAffinity == v1.ServiceAffinityClientIP {
		c.affinity = c.affinityTimeout(spec.SessionAffinityConfig)
	}
	accessible := spec.Type == v1.ServiceTypeLoadBalancer || spec.Type == v1.ServiceTypeNodePort ||
		(spec.Type == v1.ServiceTypeClusterIP && len(spec.ExternalIPs) > 0)
	c.etpLocal = accessible && spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal
	c.itpLocal = spec.InternalTrafficPolicy != nil && *spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal
	if !validPort(spec.HealthCheckNodePort) && spec.HealthCheckNodePort != 0 {
		c.problem("InvalidHealthCheckNodePort", "healthCheckNodePort %d is not a port number; ignored", spec.HealthCheckNodePort)
	} else if spec.Type == v1.ServiceTypeLoadBalancer && c.etpLocal && spec.HealthCheckNodePort != 0 {
		c.st.HealthCheckNodePort = uint16(spec.HealthCheckNodePort)
	}
}

// maxAffinityTimeout is the API's upper bound for ClientIP affinity (one day).
const maxAffinityTimeout = 86400

// affinityTimeout is the ClientIP timeout, the API's default when none is given or
// the given one is outside what API validation allows (1 s to a day).
func (c *svcCommon) affinityTimeout(cfg *v1.SessionAffinityConfig) time.Duration {
	if cfg == nil || cfg.ClientIP == nil || cfg.ClientIP.TimeoutSeconds == nil {
		return defaultAffinityTimeout
	}
	secs := *cfg.ClientIP.TimeoutSeconds
	if secs < 1 || secs > maxAffinityTimeout {
		c.problem("InvalidAffinityTimeout", "sessionAffinityConfig.clientIP.timeoutSeconds %d is not in 1-%d; the default %d is used",
			secs, maxAffinityTimeout, int(defaultAffinityTimeout.Seconds()))
		return defaultAffinityTimeout
	}
	return time.Duration(secs) * time.Second
}

// validPort reports whether n is a port number (1-65535).
func validPort(n int32) bool { return n >= 1 && n <= 65535 }

// validProtocol reports whether p is a protocol a Service port may have.
func validProtocol(p Protocol) bool { return p == TCP || p == UDP || p == SCTP }

// portProtocol is a port's protocol, TCP when empty as the API defaults it.
func portProtocol(p v1.Protocol) Protocol {
	if p == "" {
		return TCP
	}
	return Protocol(p)
}

// servicePort reports whether a Service port can be programmed at all, and why not.
func (c *svcCommon) servicePort(port v1.ServicePort) bool {
	switch proto := portProtocol(port.Protocol); {
	case !validPort(port.Port):
		c.problem("InvalidPort", "port %q has number %d; ignored", port.Name, port.Port)
	case !validProtocol(proto):
		c.problem("InvalidProtocol", "port %q has protocol %q; ignored", port.Name, proto)
	default:
		return true
	}
	return false
}

// checkShape reports what makes a service unusable that API validation would have
// caught: manifests from files, or an older API server, may still carry it.
func (c *svcCommon) checkShape() {
	if len(c.svc.Spec.Ports) == 0 {
		c.problem("NoPorts", "the service has no ports; nothing to program")
	}
	ips := c.svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{c.svc.Spec.ClusterIP}
	}
	for _, s := range ips {
		if _, err := netip.ParseAddr(s); err != nil {
			c.problem("InvalidClusterIP", "clusterIP %q is not an IP address; ignored", s)
		}
	}
}

// clusterIP returns the service's cluster IP of family f, if it has one.
func (c *svcCommon) clusterIP(f Family) (netip.Addr, bool) {
	ips := c.svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{c.svc.Spec.ClusterIP}
	}
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err == nil && FamilyOf(ip) == f {
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

func addrsOfFamily(ips []netip.Addr, f Family) []netip.Addr {
	var out []netip.Addr
	for _, ip := range ips {
		if FamilyOf(ip) == f {
			out = append(out, ip)
		}
	}
	return out
}

func (c *svcCommon) family(f Family, sl []*discovery.EndpointSlice) {
	clusterIP, ok := c.clusterIP(f)
	if !ok {
		return // kube-proxy's proxier of this family ignores the service
	}
	eps := endpointsByPort(sl, f, c.node.Name, c.problem)
	extIPs := addrsOfFamily(c.externalIPs, f)
	lbIPs := addrsOfFamily(c.lbIPs, f)
	ranges := prefixesOfFamily(c.sourceRanges, f)
	nodePortIPs := c.node.NodePortIPs(f, c.cfg)
	local := 0
	for _, port := range c.svc.Spec.Ports {
		if !c.servicePort(port) {
			continue
		}
		proto := portProtocol(port.Protocol)
		sp := ServicePort{ServiceName: c.st.Name, Port: port.Name, Protocol: proto}
		accessible := port.NodePort != 0 || len(extIPs) > 0 || len(lbIPs) > 0
		tmpl := FrontendState{
			Service:              sp,
			Affinity:             c.affinity,
			ExternalTrafficLocal: c.etpLocal,
			InternalTrafficLocal: c.itpLocal,
			HealthCheckNodePort:  c.st.HealthCheckNodePort,
		}
		portEPs := eps[portKey{port.Name, proto}]
		cat := categorize(portEPs, !c.itpLocal || accessible, c.itpLocal || (accessible && c.etpLocal), c.node)
		local = max(local, countLocalReady(portEPs))

		add := func(t FrontendType, ip netip.Addr, p int32, routes func(*FrontendState)) {
			fs := tmpl
			fs.Frontend = Frontend{FrontendKey{ip, uint16(p), proto}, t}
			routes(&fs)
			c.st.Frontends = append(c.st.Frontends, fs)
		}
		add(ClusterIP, clusterIP, port.Port, func(fs *FrontendState) { c.internalRoutes(fs, cat) })
		if port.NodePort != 0 {
			if !validPort(port.NodePort) {
				c.problem("InvalidNodePort", "nodePort %d of port %q is not a port number; not programmed", port.NodePort, port.Name)
			} else if c.cfg.NodePortRange.Size > 0 && !c.cfg.NodePortRange.Contains(int(port.NodePort)) {
				c.problem("NodePortOutOfRange", "nodePort %d of port %q is outside --node-port-range %s; not programmed",
					port.NodePort, port.Name, c.cfg.NodePortRange)
			} else {
				for _, ip := range nodePortIPs {
					add(NodePort, ip, port.NodePort, func(fs *FrontendState) { c.externalRoutes(fs, cat) })
				}
			}
		}
		for _, ip := range extIPs {
			add(ExternalIP, ip, port.Port, func(fs *FrontendState) { c.externalRoutes(fs, cat) })
		}
		for _, ip := range lbIPs {
			add(LoadBalancerIP, ip, port.Port, func(fs *FrontendState) {
				c.externalRoutes(fs, cat)
				fs.SourceRanges = ranges
			})
		}
	}
	c.st.LocalEndpoints = max(c.st.LocalEndpoints, local)
}

func prefixesOfFamily(ps []netip.Prefix, f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if FamilyOf(p.Addr()) == f {
			out = append(out, p)
		}
	}
	return out
}

// countLocalReady counts distinct ready addresses on this node.
func countLocalReady(eps []Endpoint) int {
	n := 0
	for i, b := range eps {
		if b.Local && b.Ready && (i == 0 || eps[i-1].Addr != b.Addr) {
			n++
		}
	}
	return n
}

func verdict(backends []Endpoint, anyUsable bool) Verdict {
	switch {
	case len(backends) > 0:
		return Forward
	case anyUsable:
		return Drop
	}
	return Reject
}

// internalRoutes: traffic to a ClusterIP. All clients reach the policy's endpoints;
// only the masquerade differs (kube-proxy's masquerade rules sit in the Cluster
// policy chain: everything with --masquerade-all, else what does not come from a pod).
func (c *svcCommon) internalRoutes(fs *FrontendState, cat categorized) {
	backends := cat.cluster
	if c.itpLocal {
		backends = cat.local
	}
	r := Route{Verdict: verdict(backends, cat.any), Backends: backends}
	if r.Verdict != Forward {
		r.Backends = nil
	}
	fs.Pod, fs.Host, fs.Outside = r, r, r
	if r.Verdict != Forward {
		return
	}
	// Under internalTrafficPolicy Local too: kube-proxy's masquerade rules are in
	// whichever chain the cluster IP jumps to.
	switch {
	case c.cfg.MasqueradeAll:
		fs.Pod.Masquerade, fs.Host.Masquerade, fs.Outside.Masquerade = true, true, true
	case c.detects(FamilyOf(fs.Addr)):
		fs.Host.Masquerade, fs.Outside.Masquerade = true, true
	}
}

// externalRoutes: traffic to a NodePort, externalIP or LoadBalancer IP, following
// kube-proxy's EXT chain. With the Cluster policy everyone reaches the cluster
// endpoints, masqueraded. With the Local policy, outside clients reach local
// endpoints only and keep their address (DROP if there are none here), while pods
// (short-circuited, unmasqueraded) and the host (masqueraded) reach the cluster
// endpoints as if they went out to a load balancer and came back.
func (c *svcCommon) externalRoutes(fs *FrontendState, cat categorized) {
	clusterR := Route{Verdict: verdict(cat.cluster, cat.any), Backends: cat.cluster}
	if !cat.any {
		clusterR = Route{Verdict: Reject}
	}
	if !c.etpLocal {
		clusterR.Masquerade = clusterR.Verdict == Forward
		fs.Pod, fs.Host, fs.Outside = clusterR, clusterR, clusterR
		return
	}
	fs.Outside = Route{Verdict: verdict(cat.local, cat.any), Backends: cat.local}
	fs.Host = clusterR
	fs.Host.Masquerade = clusterR.Verdict == Forward
	if c.detects(FamilyOf(fs.Addr)) {
		fs.Pod = clusterR
	} else {
		fs.Pod = fs.Outside // without a detector pods look like outside clients
	}
}

func compareKeys(a, b FrontendKey) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Port, b.Port); c != 0 {
		return c
	}
	return cmp.Compare(a.Protocol, b.Protocol)
}

func dedupProblems(ps []Problem) []Problem {
	var out []Problem
	for _, p := range ps {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}
