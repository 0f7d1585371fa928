// Package dataplane holds Switchyard's backend-neutral model: the desired state of
// one node computed from Services, EndpointSlices, the Node and the agent's
// configuration, the change tracker that feeds it, the Backend contract and the
// sync loop that drives a backend.
package dataplane

import (
	"fmt"
	"net/netip"
	"time"
)

// Protocol is a Service port protocol as Kubernetes spells it.
type Protocol string

const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// Family is an IP family.
type Family uint8

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// FamilyOf returns the family of an address (4-in-6 addresses count as IPv4).
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// FrontendType says how a frontend address belongs to its service.
type FrontendType uint8

const (
	ClusterIP FrontendType = iota
	NodePort
	ExternalIP
	LoadBalancerIP
)

func (t FrontendType) String() string {
	switch t {
	case ClusterIP:
		return "ClusterIP"
	case NodePort:
		return "NodePort"
	case ExternalIP:
		return "ExternalIP"
	case LoadBalancerIP:
		return "LoadBalancer"
	}
	return fmt.Sprintf("FrontendType(%d)", uint8(t))
}

// ServiceName identifies a Service.
type ServiceName struct {
	Namespace, Name string
}

func (n ServiceName) String() string { return n.Namespace + "/" + n.Name }

// ServicePort identifies one port of a Service, the unit kube-proxy load-balances
// (its ServicePortName).
type ServicePort struct {
	ServiceName
	Port     string // the port's name; "" for an unnamed port
	Protocol Protocol
}

func (p ServicePort) String() string {
	if p.Port == "" {
		return p.ServiceName.String() + "/" + string(p.Protocol)
	}
	return p.ServiceName.String() + ":" + p.Port + "/" + string(p.Protocol)
}

// FrontendKey is what the kernel matches a packet or socket on. Two services that
// claim the same key collide; the model gives it to one of them.
type FrontendKey struct {
	Addr     netip.Addr
	Port     uint16
	Protocol Protocol
}

func (k FrontendKey) String() string {
	return netip.AddrPortFrom(k.Addr, k.Port).String() + "/" + string(k.Protocol)
}

// Frontend is an address, port and protocol at which a service port is reached.
type Frontend struct {
	FrontendKey
	Type FrontendType
}

// Endpoint is one endpoint of a service port: the DNAT target and the conditions the
// model selected it on.
type Endpoint struct {
	Addr        netip.Addr
	Port        uint16
	Ready       bool
	Serving     bool
	Terminating bool
	Local       bool   // the endpoint runs on this node
	NodeName    string // "" when the EndpointSlice does not say
	Zone        string
	ZoneHints   []string
	NodeHints   []string
}

func (b Endpoint) AddrPort() netip.AddrPort { return netip.AddrPortFrom(b.Addr, b.Port) }

// Verdict is what happens to a new connection on a route.
type Verdict uint8

const (
	// Forward: load-balance across Route.Backends.
	Forward Verdict = iota
	// Reject: the service has no usable endpoint at all; the client sees a refusal
	// (TCP reset / ICMP port unreachable / ECONNREFUSED), as with kube-proxy's REJECT.
	Reject
	// Drop: usable endpoints exist, but none that this traffic may use (a Local
	// traffic policy with endpoints only on other nodes); packets are dropped.
	Drop
)

func (v Verdict) String() string {
	switch v {
	case Forward:
		return "FORWARD"
	case Reject:
		return "REJECT"
	case Drop:
		return "DROP"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// Route is the treatment of new connections from one class of client.
type Route struct {
	Verdict Verdict
	// Backends is non-empty exactly when Verdict is Forward. Routes of one service
	// port share the slice; treat it as read-only.
	Backends []Endpoint
	// Masquerade: SNAT the connection to the node's address. Hairpin traffic (a
	// backend reaching itself through the service) is always masqueraded by the
	// backends, as kube-proxy does, so it is not part of this flag.
	Masquerade bool
}

// FrontendState is the desired state of one frontend: everything a backend needs to
// program it. Clients fall in three classes, because kube-proxy treats them
// differently:
//   - Pod: the source is inside --cluster-cidr (only when a cluster CIDR is set;
//     without one pods are indistinguishable from Outside and get that route);
//   - Host: the connection starts on the node itself (a local source address);
//   - Outside: everything else, arriving through the node's devices.
type FrontendState struct {
	Frontend
	Service ServicePort
	// Affinity is the ClientIP session affinity timeout; 0 means no affinity.
	Affinity time.Duration
	// SourceRanges restrict LoadBalancer frontends (loadBalancerSourceRanges of this
	// family, already validated); empty means any source. A packet from outside the
	// ranges is dropped; they apply only when the route's verdict is Forward.
	SourceRanges         []netip.Prefix
	Pod, Host, Outside   Route
	ExternalTrafficLocal bool
	InternalTrafficLocal bool
	HealthCheckNodePort  uint16
}

// Routes returns the three routes in the order Pod, Host, Outside.
func (f *FrontendState) Routes() [3]*Route { return [3]*Route{&f.Pod, &f.Host, &f.Outside} }
