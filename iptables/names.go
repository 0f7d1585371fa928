package iptables

import (
	"strings"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// Prefix starts the name of every chain Switchyard owns, where kube-proxy uses KUBE-,
// so the two never touch each other's chains.
const Prefix = "SWYD-"

// The chains every sync writes (kube-proxy's KUBE-SERVICES, KUBE-NODEPORTS, ...).
const (
	ChainServices         = Prefix + "SERVICES"
	ChainExternalServices = Prefix + "EXTERNAL-SERVICES"
	ChainNodePorts        = Prefix + "NODEPORTS"
	ChainPostrouting      = Prefix + "POSTROUTING"
	ChainMarkMasq         = Prefix + "MARK-MASQ"
	ChainForward          = Prefix + "FORWARD"
	ChainProxyFirewall    = Prefix + "PROXY-FIREWALL"
	// ChainFirewall is Switchyard's copy of kubelet's KUBE-FIREWALL: it only holds the
	// rule that closes the hole route_localnet opens for localhost NodePorts.
	ChainFirewall = Prefix + "FIREWALL"
)

const (
	prefixSVC = Prefix + "SVC-"
	prefixSVL = Prefix + "SVL-"
	prefixFW  = Prefix + "FW-"
	prefixEXT = Prefix + "EXT-"
	prefixSEP = Prefix + "SEP-"
)

// IsServiceChain reports whether a chain is one of the per-service chains
// (SVC/SVL/EXT/FW/SEP) that ServiceRules renders: the ones a backend deletes once no
// service renders them any more.
func IsServiceChain(name string) bool {
	for _, p := range []string{prefixSVC, prefixSVL, prefixFW, prefixEXT, prefixSEP} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// portChains are the names of one service port's chains.
type portChains struct {
	svc, svl, ext, fw string
}

// chainsOf hashes exactly what kube-proxy hashes (servicePortChainName and friends),
// so SWYD-SVC-X is the KUBE-SVC-X of the same service port: easy to compare.
func chainsOf(name, proto string) portChains {
	h := netfilter.ChainHash(name + proto)
	return portChains{svc: prefixSVC + h, svl: prefixSVL + h, ext: prefixEXT + h, fw: prefixFW + h}
}

// endpointChain is kube-proxy's servicePortEndpointChainName with our prefix;
// endpoint is "ip:port" ("[ip]:port" for IPv6).
func endpointChain(name, proto, endpoint string) string {
	return prefixSEP + netfilter.ChainHash(name+proto+endpoint)
}

// portName is kube-proxy's ServicePortName.String(): "ns/name:port", or "ns/name" for
// an unnamed port. It appears in comments and feeds the chain hashes.
func portName(sp dataplane.ServicePort) string {
	s := sp.Namespace + "/" + sp.Name
	if sp.Port != "" {
		s += ":" + sp.Port
	}
	return s
}

func protoName(p dataplane.Protocol) string { return strings.ToLower(string(p)) }
