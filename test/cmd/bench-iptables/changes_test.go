package main

import (
	"slices"
	"testing"
)

// The names kube-proxy v1.37.2 gave these chains (seen in iptables-save output).
func TestChainNamesAreKubeProxys(t *testing.T) {
	if got := hash16("bench/svc-00660:http" + "tcp"); got != "22VDZPOQ4LR43IH3" {
		t.Errorf("service chain hash %s", got)
	}
	if got := hash16("bench/svc-00660:http" + "tcp" + "10.0.25.201:8080"); got != "67UOGU4BFTSOHXXN" {
		t.Errorf("endpoint chain hash %s", got)
	}
}

func TestChangesAlternateAndStayApart(t *testing.T) {
	ips := map[string]bool{}
	for k := range 200 {
		ch := planChange(k, 1000)
		if want := map[bool]string{true: "service", false: "endpoint"}[k%2 == 1]; ch.Kind != want {
			t.Fatalf("change %d is %s", k, ch.Kind)
		}
		for _, ip := range []string{newEndpointIP(k), createdIP(k)} {
			if ips[ip] {
				t.Fatalf("change %d: %s used twice", k, ip)
			}
			ips[ip] = true
		}
		cs := ch.checks("KUBE-")
		if len(cs) != 2 || slices.ContainsFunc(cs, func(c ruleCheck) bool { return c.chain == "" || c.text == "" }) {
			t.Fatalf("change %d: checks %v", k, cs)
		}
	}
	if got := planChange(1, 1000).checks("SWYD-")[0]; got != (ruleCheck{"SWYD-SERVICES", "-d 172.30.200.1/32 "}) {
		t.Errorf("service check %v", got)
	}
	if clusterIP(0) != "172.30.1.0" || endpointIP(9999, 9, 10) != "10.1.134.160" || newEndpointIP(0) != "10.128.0.1" {
		t.Error("address plan changed")
	}
}
