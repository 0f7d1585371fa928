package dataplane

import (
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// scale builds n NodePort services with 10 endpoints each (NodePorts from 20000,
// so the tracker widens the range).
func scale(n int) ([]*v1.Service, []*discovery.EndpointSlice) {
	var svcs []*v1.Service
	var sls []*discovery.EndpointSlice
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("svc-%d", i)
		svcs = append(svcs, svc(name, clusterIPs(fmt.Sprintf("172.30.%d.%d", i/256, i%256)), nodePort(int32(20000+i))))
		eps := []string{fmt.Sprintf("10.1.%d.%d/l", i/256, i%256)} // one endpoint on this node
		for j := 2; j <= 10; j++ {
			eps = append(eps, fmt.Sprintf("10.%d.%d.%d", j, i/256, i%256))
		}
		sl := slice(name+"-abc", 8080, eps...)
		sl.Labels[LabelServiceName] = name
		sls = append(sls, sl)
	}
	return svcs, sls
}

func loadTracker(svcs []*v1.Service, sls []*discovery.EndpointSlice) *Tracker {
	tr := NewTracker(cfgWith(func(c *Config) { c.NodePortRange = PortRange{Base: 20000, Size: 20000} }), nil)
	tr.SetNode(testNode("192.168.0.2"))
	for _, s := range svcs {
		tr.UpsertService(s)
	}
	for _, s := range sls {
		tr.UpsertEndpointSlice(s)
	}
	return tr
}

// BenchmarkBuildState10k computes the desired state of 10,000 services x 10
// endpoints from scratch (tracker recompute plus state apply).
func BenchmarkBuildState10k(b *testing.B) {
	svcs, sls := scale(10000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st := NewState()
		st.Apply(loadTracker(svcs, sls).Take().Services)
		if len(st.Frontends) != 30000 {
			b.Fatalf("frontends %d", len(st.Frontends))
		}
	}
}

// BenchmarkOneEndpointChange10k applies one endpoint change on top of 10,000
// services: record the event, recompute the one service, diff its frontends.
func BenchmarkOneEndpointChange10k(b *testing.B) {
	svcs, sls := scale(10000)
	tr := loadTracker(svcs, sls)
	st := NewState()
	st.Apply(tr.Take().Services)
	alt := [2]*discovery.EndpointSlice{sls[42].DeepCopy(), sls[42]}
	alt[0].Endpoints = alt[0].Endpoints[1:]
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr.UpsertEndpointSlice(alt[i%2])
		cs := st.Apply(tr.Take().Services)
		if len(cs.Frontends) != 3 {
			b.Fatalf("changed %d frontends, want 3", len(cs.Frontends))
		}
	}
}
