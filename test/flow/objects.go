package flow

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// ManagedBy marks the EndpointSlices the runner writes (no controller runs).
const ManagedBy = "flowtest.switchyard.dev"

// Objects are a case's Kubernetes objects.
type Objects struct {
	Node           *v1.Node
	Services       []*v1.Service
	EndpointSlices []*discovery.EndpointSlice
}

// ToObjects turns a case into the objects a proxy watches.
func (c *Case) ToObjects() Objects {
	o := Objects{Node: c.node()}
	for _, s := range c.Services {
		o.Services = append(o.Services, s.toService())
	}
	for _, s := range c.EndpointSlices {
		o.EndpointSlices = append(o.EndpointSlices, s.toSlice())
	}
	return o
}

func (c *Case) node() *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: c.Node.Name, Labels: map[string]string{v1.LabelHostname: c.Node.Name}}}
	if c.Node.Zone != "" {
		n.Labels[v1.LabelTopologyZone] = c.Node.Zone
	}
	for _, ip := range c.Node.IPs {
		n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip})
	}
	n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeHostName, Address: c.Node.Name})
	return n
}

func (s Service) toService() *v1.Service {
	svc := &v1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name},
		Spec: v1.ServiceSpec{
			Type:            v1.ServiceType(orDefault(s.Type, "ClusterIP")),
			ClusterIP:       s.ClusterIP,
			ExternalIPs:     s.ExternalIPs,
			SessionAffinity: v1.ServiceAffinity(orDefault(s.SessionAffinity, "None")),
		},
	}
	if s.ClusterIP != "" {
		svc.Spec.ClusterIPs = []string{s.ClusterIP}
		if ip, err := netip.ParseAddr(s.ClusterIP); err == nil && ip.Is6() {
			svc.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol}
		}
	}
	for _, p := range s.Ports {
		target := p.TargetPort
		if target == 0 {
			target = p.Port
		}
		svc.Spec.Ports = append(svc.Spec.Ports, v1.ServicePort{
			Name: p.Name, Protocol: v1.Protocol(orDefault(p.Protocol, "TCP")), Port: p.Port,
			TargetPort: intstr.FromInt32(target), NodePort: p.NodePort,
		})
	}
	if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP && s.AffinityTimeoutSeconds > 0 {
		svc.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To(s.AffinityTimeoutSeconds)}}
	}
	if svc.Spec.Type == v1.ServiceTypeNodePort || svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicy(orDefault(s.ExternalTrafficPolicy, "Cluster"))
	}
	if s.InternalTrafficPolicy != "" {
		svc.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicy(s.InternalTrafficPolicy))
	}
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		svc.Spec.HealthCheckNodePort = s.HealthCheckNodePort
		svc.Spec.LoadBalancerSourceRanges = s.LoadBalancerSourceRanges
		for _, ip := range s.LoadBalancerIPs {
			svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip, IPMode: ptr.To(v1.LoadBalancerIPModeVIP)})
		}
	}
	return svc
}

func (s EndpointSlice) toSlice() *discovery.EndpointSlice {
	sl := &discovery.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, Labels: map[string]string{
			discovery.LabelServiceName: s.Service, discovery.LabelManagedBy: ManagedBy,
		}},
		AddressType: discovery.AddressType(orDefault(s.AddressType, "IPv4")),
	}
	for _, p := range s.Ports {
		sl.Ports = append(sl.Ports, discovery.EndpointPort{
			Name: ptr.To(p.Name), Protocol: ptr.To(v1.Protocol(orDefault(p.Protocol, "TCP"))), Port: ptr.To(p.Port),
		})
	}
	for _, e := range s.Endpoints {
		ep := discovery.Endpoint{
			Addresses:  e.Addresses,
			Conditions: discovery.EndpointConditions{Ready: e.Ready, Serving: e.Serving, Terminating: e.Terminating},
			NodeName:   e.NodeName,
		}
		if e.Zone != "" {
			ep.Zone = ptr.To(e.Zone)
		}
		sl.Endpoints = append(sl.Endpoints, ep)
	}
	return sl
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// WriteManifests writes the objects as one YAML file in dir, for Switchyard's
// --source=file.
func (o Objects) WriteManifests(dir string) error {
	var docs [][]byte
	add := func(obj any) error {
		b, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		docs = append(docs, b)
		return nil
	}
	node := o.Node.DeepCopy()
	node.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}
	if err := add(node); err != nil {
		return err
	}
	for _, s := range o.Services {
		if err := add(s); err != nil {
			return err
		}
	}
	for _, s := range o.EndpointSlices {
		if err := add(s); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "objects.yaml"), bytes.Join(docs, []byte("---\n")), 0o644)
}
