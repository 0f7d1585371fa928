package dataplane

import (
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
)

// toBeDeletedTaint marks a node the cluster autoscaler is about to remove; kube-proxy
// reports such a node as not eligible so load balancers drain it.
const toBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// NodeInfo is what the model needs of this node's Node object.
type NodeInfo struct {
	Name string
	// Zone is the node's topology.kubernetes.io/zone label.
	Zone string
	// IPs are the node's InternalIPs, then its ExternalIPs, in the Node's order; the
	// first of each family is the node's primary address of that family.
	IPs []netip.Addr
	// Eligible is false while the node is being deleted or drained by the autoscaler.
	Eligible bool
}

// NodeInfoFromNode extracts NodeInfo; a nil node gives an eligible node without
// addresses or zone.
func NodeInfoFromNode(name string, n *v1.Node) NodeInfo {
	info := NodeInfo{Name: name, Eligible: true}
	if n == nil {
		return info
	}
	info.Zone = n.Labels[v1.LabelTopologyZone]
	for _, want := range []v1.NodeAddressType{v1.NodeInternalIP, v1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type != want {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				info.IPs = appendUnique(info.IPs, ip.Unmap())
			}
		}
	}
	if n.DeletionTimestamp != nil {
		info.Eligible = false
	}
	for _, t := range n.Spec.Taints {
		if t.Key == toBeDeletedTaint {
			info.Eligible = false
		}
	}
	return info
}

// Equal reports whether two NodeInfos are the same.
func (n NodeInfo) Equal(o NodeInfo) bool {
	return n.Name == o.Name && n.Zone == o.Zone && n.Eligible == o.Eligible && slices.Equal(n.IPs, o.IPs)
}

func appendUnique(ips []netip.Addr, ip netip.Addr) []netip.Addr {
	for _, x := range ips {
		if x == ip {
			return ips
		}
	}
	return append(ips, ip)
}

// Families are the IP families the node has an address of. A node without addresses
// is treated as IPv4-only, as kube-proxy falls back to 127.0.0.1.
func (n NodeInfo) Families() []Family {
	var has4, has6 bool
	for _, ip := range n.IPs {
		if FamilyOf(ip) == IPv4 {
			has4 = true
		} else {
			has6 = true
		}
	}
	var fams []Family
	if has4 || !has6 {
		fams = append(fams, IPv4)
	}
	if has6 {
		fams = append(fams, IPv6)
	}
	return fams
}

// NodePortIPs returns the addresses of family f that NodePorts are served on.
func (n NodeInfo) NodePortIPs(f Family, cfg Config) []netip.Addr {
	var out []netip.Addr
	sel := cfg.NodePortAddresses
	for _, ip := range n.IPs {
		if FamilyOf(ip) != f {
			continue
		}
		switch {
		case sel.Primary:
			// The primary address is the first of the family; take it and stop.
			return []netip.Addr{ip}
		case sel.allOf(f):
			out = append(out, ip)
		default:
			for _, c := range sel.cidrsOf(f) {
				if c.Contains(ip) {
					out = append(out, ip)
					break
				}
			}
		}
	}
	if f == IPv4 && cfg.LocalhostNodePorts && sel.containsIPv4Loopback() {
		out = appendUnique(out, netip.MustParseAddr("127.0.0.1"))
	}
	return out
}
