package dataplane

import (
	"cmp"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// portKey matches an EndpointSlice port to a Service port, by name and protocol.
type portKey struct {
	name     string
	protocol Protocol
}

// endpointsByPort collects the endpoints of family f from a service's slices, keyed
// by port name and protocol, deduplicated by address and port the way kube-proxy's
// EndpointSliceCache does (the first address of an endpoint counts; a local copy
// wins over a remote one). Slices are visited in name order so the result does not
// depend on map order. Ports and addresses that are not what the API allows are
// left out and reported through problem.
func endpointsByPort(sl []*discovery.EndpointSlice, f Family, nodeName string, problem problemFunc) map[portKey][]Endpoint {
	sorted := slices.Clone(sl)
	slices.SortFunc(sorted, func(a, b *discovery.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })

	out := map[portKey][]Endpoint{}
	seen := map[portKey]map[netip.AddrPort]int{}
	for _, s := range sorted {
		if !sliceFamilyMatches(s.AddressType, f) || s.Labels[labelServiceProxyName] != "" {
			continue
		}
		addrs := sliceAddrs(s, f, problem)
		for _, p := range s.Ports {
			pk, ok := slicePort(s.Name, p, problem)
			if !ok {
				continue
			}
			for i, ep := range s.Endpoints {
				if !addrs[i].IsValid() {
					continue
				}
				b := endpointFrom(ep, addrs[i], uint16(*p.Port), nodeName)
				idx, dup := seen[pk][b.AddrPort()]
				switch {
				case !dup:
					if seen[pk] == nil {
						seen[pk] = map[netip.AddrPort]int{}
					}
					seen[pk][b.AddrPort()] = len(out[pk])
					out[pk] = append(out[pk], b)
				case b.Local:
					out[pk][idx] = b
				}
			}
		}
	}
	for pk := range out {
		slices.SortFunc(out[pk], func(a, b Endpoint) int { return a.AddrPort().Compare(b.AddrPort()) })
	}
	return out
}

// problemFunc reports a problem of the service being computed.
type problemFunc func(reason, format string, args ...any)

// slicePort is the key an EndpointSlice port matches Service ports by, or false
// when the port is left out.
func slicePort(slice string, p discovery.EndpointPort, problem problemFunc) (portKey, bool) {
	if p.Port == nil {
		return portKey{}, false // kube-proxy ignores ports without a number
	}
	pk := portKey{protocol: TCP}
	if p.Name != nil {
		pk.name = *p.Name
	}
	if p.Protocol != nil {
		pk.protocol = Protocol(*p.Protocol)
	}
	switch {
	case !validPort(*p.Port):
		problem("InvalidEndpointPort", "EndpointSlice %s: port %q has number %d; ignored", slice, pk.name, *p.Port)
	case !validProtocol(pk.protocol):
		problem("InvalidEndpointProtocol", "EndpointSlice %s: port %q has protocol %q; ignored", slice, pk.name, pk.protocol)
	default:
		return pk, true
	}
	return portKey{}, false
}

// sliceAddrs parses each endpoint's first address (the one kube-proxy uses); an
// endpoint without a usable one gets the zero Addr.
func sliceAddrs(s *discovery.EndpointSlice, f Family, problem problemFunc) []netip.Addr {
	out := make([]netip.Addr, len(s.Endpoints))
	for i, ep := range s.Endpoints {
		if len(ep.Addresses) == 0 {
			continue
		}
		addr, err := netip.ParseAddr(ep.Addresses[0])
		if err != nil || FamilyOf(addr) != f {
			problem("InvalidEndpointAddress", "EndpointSlice %s: endpoint address %q is not an %s address; ignored",
				s.Name, ep.Addresses[0], f)
			continue
		}
		out[i] = addr.Unmap()
	}
	return out
}

func sliceFamilyMatches(t discovery.AddressType, f Family) bool {
	return (t == discovery.AddressTypeIPv4 && f == IPv4) || (t == discovery.AddressTypeIPv6 && f == IPv6)
}

func endpointFrom(ep discovery.Endpoint, addr netip.Addr, port uint16, nodeName string) Endpoint {
	b := Endpoint{
		Addr: addr,
		Port: port,
		// kube-proxy: a missing condition means ready and serving, not terminating.
		Ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
		Serving:     ep.Conditions.Serving == nil || *ep.Conditions.Serving,
		Terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
	}
	if ep.NodeName != nil {
		b.NodeName = *ep.NodeName
		b.Local = nodeName != "" && b.NodeName == nodeName
	}
	if ep.Zone != nil {
		b.Zone = *ep.Zone
	}
	if ep.Hints != nil {
		for _, z := range ep.Hints.ForZones {
			b.ZoneHints = append(b.ZoneHints, z.Name)
		}
		for _, n := range ep.Hints.ForNodes {
			b.NodeHints = append(b.NodeHints, n.Name)
		}
	}
	return b
}

// categorized is kube-proxy's CategorizeEndpoints result.
type categorized struct {
	cluster []Endpoint // for Cluster traffic policy (topology applied)
	local   []Endpoint // for Local traffic policy
	// any: the service has a usable endpoint somewhere (ready, or serving and
	// terminating); without one its frontends REJECT.
	any bool
}

// categorize follows kube-proxy's CategorizeEndpoints: ready endpoints first, the
// serving+terminating ones of the same scope when there are none; topology hints
// narrow the cluster set only.
func categorize(eps []Endpoint, usesCluster, usesLocal bool, node NodeInfo) categorized {
	var c categorized
	if usesCluster {
		mode := topologyMode(eps, node)
		c.cluster = filter(eps, func(b Endpoint) bool { return b.Ready && availableForTopology(b, mode, node) })
		if len(c.cluster) == 0 {
			c.cluster = filter(eps, func(b Endpoint) bool {
				return b.Serving && b.Terminating && availableForTopology(b, mode, node)
			})
		}
		c.any = len(c.cluster) > 0
	}
	if !usesLocal {
		return c
	}
	var localReady, localTerminating bool
	for _, b := range eps {
		if b.Ready {
			c.any = true
			localReady = localReady || b.Local
		} else if b.Serving && b.Terminating {
			c.any = true
			localTerminating = localTerminating || b.Local
		}
	}
	switch {
	case localReady:
		c.local = filter(eps, func(b Endpoint) bool { return b.Local && b.Ready })
	case localTerminating:
		c.local = filter(eps, func(b Endpoint) bool { return b.Local && b.Serving && b.Terminating })
	}
	return c
}

func filter(eps []Endpoint, keep func(Endpoint) bool) []Endpoint {
	var out []Endpoint
	for _, b := range eps {
		if keep(b) {
			out = append(out, b)
		}
	}
	return out
}

// topologyMode is kube-proxy's topologyModeFromHints: PreferSameNode when every ready
// endpoint has node hints and one names this node; else PreferSameZone when every
// ready endpoint has zone hints and one names this node's zone; else no topology.
func topologyMode(eps []Endpoint, node NodeInfo) string {
	allNode, forNode := true, false
	allZone, forZone := true, false
	for _, b := range eps {
		if !b.Ready {
			continue
		}
		if len(b.ZoneHints) == 0 {
			allZone = false
		} else if slices.Contains(b.ZoneHints, node.Zone) {
			forZone = true
		}
		if len(b.NodeHints) == 0 {
			allNode = false
		} else if slices.Contains(b.NodeHints, node.Name) {
			forNode = true
		}
	}
	switch {
	case allNode && forNode:
		return v1.ServiceTrafficDistributionPreferSameNode
	case allZone && forZone:
		return v1.ServiceTrafficDistributionPreferSameZone
	}
	return ""
}

func availableForTopology(b Endpoint, mode string, node NodeInfo) bool {
	switch mode {
	case v1.ServiceTrafficDistributionPreferSameNode:
		return slices.Contains(b.NodeHints, node.Name)
	case v1.ServiceTrafficDistributionPreferSameZone:
		return slices.Contains(b.ZoneHints, node.Zone)
	}
	return true
}
