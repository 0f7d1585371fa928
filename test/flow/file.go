// Package flow reads flow files (cases of Services, EndpointSlices and the flows
// expected through them) and judges what the probes saw against them.
package flow

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// File is one flow file.
type File struct {
	Cases []Case `json:"cases"`
}

// Case is one cluster state and the flows expected through it.
type Case struct {
	Name string `json:"name"`
	// Proxies whose semantics these expectations describe; empty means all.
	Proxies        []string        `json:"proxies"`
	Node           Node            `json:"node"`
	Config         Config          `json:"config"`
	Services       []Service       `json:"services"`
	EndpointSlices []EndpointSlice `json:"endpointSlices"`
	Flows          []Flow          `json:"flows"`
	// File is where the case came from (not in the JSON).
	File string `json:"-"`
}

type Node struct {
	Name string   `json:"name"`
	IPs  []string `json:"ips"`
	Zone string   `json:"zone"`
}

type Config struct {
	ClusterCIDR        string   `json:"clusterCIDR"`
	ServiceCIDRs       []string `json:"serviceCIDRs"`
	NodePortAddresses  []string `json:"nodePortAddresses"`
	LocalhostNodePorts *bool    `json:"localhostNodePorts"`
	MasqueradeAll      bool     `json:"masqueradeAll"`
}

type Service struct {
	Namespace                string        `json:"namespace"`
	Name                     string        `json:"name"`
	Type                     string        `json:"type"`
	ClusterIP                string        `json:"clusterIP"`
	ExternalIPs              []string      `json:"externalIPs"`
	LoadBalancerIPs          []string      `json:"loadBalancerIPs"`
	Ports                    []ServicePort `json:"ports"`
	SessionAffinity          string        `json:"sessionAffinity"`
	AffinityTimeoutSeconds   int32         `json:"affinityTimeoutSeconds"`
	ExternalTrafficPolicy    string        `json:"externalTrafficPolicy"`
	InternalTrafficPolicy    string        `json:"internalTrafficPolicy"`
	HealthCheckNodePort      int32         `json:"healthCheckNodePort"`
	LoadBalancerSourceRanges []string      `json:"loadBalancerSourceRanges"`
}

type ServicePort struct {
	Name       string `json:"name"`
	Protocol   string `json:"protocol"`
	Port       int32  `json:"port"`
	TargetPort int32  `json:"targetPort"`
	NodePort   int32  `json:"nodePort"`
}

type EndpointSlice struct {
	Namespace   string         `json:"namespace"`
	Service     string         `json:"service"`
	Name        string         `json:"name"`
	AddressType string         `json:"addressType"`
	Ports       []EndpointPort `json:"ports"`
	Endpoints   []Endpoint     `json:"endpoints"`
}

type EndpointPort struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Port     int32  `json:"port"`
}

type Endpoint struct {
	Addresses   []string `json:"addresses"`
	Ready       *bool    `json:"ready"`
	Serving     *bool    `json:"serving"`
	Terminating *bool    `json:"terminating"`
	// NodeName null or another node's name: the endpoint runs on a remote node.
	NodeName *string `json:"nodeName"`
	Zone     string  `json:"zone"`
}

// Flow is new connections from one source to one destination, and what they must
// get.
type Flow struct {
	Name     string `json:"name"`
	SourceIP string `json:"sourceIP"`
	DestIP   string `json:"destIP"`
	DestPort int    `json:"destPort"`
	Protocol string `json:"protocol"`
	// Output: a set of "ip:port" endpoints, REJECT, DROP, or "" (not proxied).
	Output   string `json:"output"`
	Masq     bool   `json:"masq"`
	Affinity bool   `json:"affinity"`
}

// Load reads flow files; unknown fields are ignored (files may carry notes).
func Load(paths ...string) ([]Case, error) {
	var cases []Case
	names := map[string]string{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var f File
		if err := json.Unmarshal(data, &f); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		for _, c := range f.Cases {
			c.File = p
			if err := c.validate(); err != nil {
				return nil, fmt.Errorf("%s: case %q: %w", p, c.Name, err)
			}
			if other, dup := names[c.Name]; dup {
				return nil, fmt.Errorf("%s: case name %q is also used in %s", p, c.Name, other)
			}
			names[c.Name] = p
			cases = append(cases, c)
		}
	}
	return cases, nil
}

func (c *Case) validate() error {
	if c.Name == "" || c.Node.Name == "" || len(c.Node.IPs) == 0 {
		return fmt.Errorf("a case needs a name, a node name and node IPs")
	}
	for _, ip := range c.Node.IPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return fmt.Errorf("node IP %q: %w", ip, err)
		}
	}
	for _, f := range c.Flows {
		if _, err := netip.ParseAddr(f.SourceIP); err != nil {
			return fmt.Errorf("flow %q: sourceIP: %w", f.Name, err)
		}
		if _, err := netip.ParseAddr(f.DestIP); err != nil {
			return fmt.Errorf("flow %q: destIP: %w", f.Name, err)
		}
		if _, err := ParseOutput(f.Output); err != nil {
			return fmt.Errorf("flow %q: %w", f.Name, err)
		}
		if p := strings.ToUpper(f.Protocol); p != "TCP" && p != "UDP" && p != "SCTP" {
			return fmt.Errorf("flow %q: protocol %q", f.Name, f.Protocol)
		}
	}
	return nil
}

// AppliesTo reports whether the case's expectations describe proxy.
func (c *Case) AppliesTo(proxy string) bool {
	return len(c.Proxies) == 0 || slices.Contains(c.Proxies, proxy)
}

// ServiceCIDRs returns the service CIDRs the cases ask the API server for, at most
// one per family (dual-stack: IPv4 first), or an error when cases disagree.
func ServiceCIDRs(cases []Case) ([]string, error) {
	var v4, v6 string
	for _, c := range cases {
		for _, s := range c.Config.ServiceCIDRs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("case %q: service CIDR %q: %w", c.Name, s, err)
			}
			cur := &v4
			if p.Addr().Is6() {
				cur = &v6
			}
			if *cur != "" && *cur != p.String() {
				return nil, fmt.Errorf("case %q wants service CIDR %s, another case %s: run them separately", c.Name, p, *cur)
			}
			*cur = p.String()
		}
	}
	var out []string
	for _, s := range []string{v4, v6} {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}
