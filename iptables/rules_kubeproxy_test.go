package iptables

import (
	"os"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// kubeProxyOverall is upstream's TestOverallIPTablesRules
// (k8s.io/kubernetes@v1.37.2/pkg/proxy/iptables/proxier_test.go) as a scenario:
// the same services, endpoints and node (192.168.0.2, cluster CIDR 10.0.0.0/8,
// NodePorts on every address and on localhost; the node's name does not show).
func kubeProxyOverall() scenario {
	port := func(s *v1.Service) { s.Spec.Ports[0].TargetPort = intstr.FromInt32(80) }
	svc1 := service("ns1", "svc1", "172.30.0.41")
	svc2 := service("ns2", "svc2", "172.30.0.42", withNodePort(3001), withLB("1.2.3.4"),
		withExternalIPs("192.168.99.22"), withETPLocal(30000))
	svc3 := service("ns3", "svc3", "172.30.0.43", withNodePort(3003))
	svc4 := service("ns4", "svc4", "172.30.0.44", withExternalIPs("192.168.99.33"), port,
		func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeNodePort })
	svc5 := service("ns5", "svc5", "172.30.0.45", withNodePort(3002), withLB("5.6.7.8"),
		withSourceRanges(" 203.0.113.0/25"), withAffinity(10800), func(s *v1.Service) {
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
			s.Spec.HealthCheckNodePort = 30000
		})
	svc6 := service("ns6", "svc6", "172.30.0.46", port)
	remote := func(s *discovery.EndpointSlice) *discovery.EndpointSlice {
		for i := range s.Endpoints {
			if *s.Endpoints[i].NodeName == "node-b" {
				s.Endpoints[i].NodeName = nil // upstream sets no node name
			}
		}
		return s
	}
	return scenario{
		name:     "kube-proxy-overall",
		nodeIPs:  []string{"192.168.0.2"},
		services: []*v1.Service{svc1, svc2, svc3, svc4, svc5, svc6},
		slices: []*discovery.EndpointSlice{
			remote(endpoints(svc1, 80, eps("10.180.0.1"))),
			remote(endpoints(svc2, 80, eps("10.180.0.2"))),
			remote(endpoints(svc3, 80, eps("10.180.0.3"))),
			remote(endpoints(svc4, 80, eps("10.180.0.4", "10.180.0.5/l"))),
			remote(endpoints(svc5, 80, eps("10.180.0.3"))),
		},
	}
}

// TestKubeProxyOverall compares our rules with upstream's expected output, taken
// verbatim into testdata/kube-proxy-overall.txt, after the differences we mean:
// the SWYD- prefix, the masquerade mark printed as kube-proxy's real proxier prints
// it (the test proxier uses "0x4000"), and no nfacct counters (a localhost NodePort
// rule that only counts, and the counter on INVALID drops). Upstream's test helper
// sorts the top chains by service; ours are compared as sets, the rest in order.
func TestKubeProxyOverall(t *testing.T) {
	raw, err := os.ReadFile("testdata/kube-proxy-overall.txt")
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.Contains(l, "localhost_nps_accepted_pkts") {
			continue
		}
		l = strings.ReplaceAll(l, "-m nfacct --nfacct-name ct_state_invalid_dropped_pkts ", "")
		kept = append(kept, strings.ReplaceAll(l, "KUBE-", Prefix))
	}
	want := parseRestore(t, strings.Join(kept, "\n"))

	sc := kubeProxyOverall()
	st := sc.state(t, nil)
	text := strings.ReplaceAll(restoreText(render(t, st, sc.cfg()), nil), "0x00004000", "0x4000")
	got := parseRestore(t, text)

	unordered := []string{ChainServices, ChainNodePorts, ChainExternalServices, ChainProxyFirewall}
	for _, tbl := range []string{"filter", "nat"} {
		w, g := want[tbl], got[tbl]
		// Upstream declares KUBE-FIREWALL (kubelet's) only when it writes its rule;
		// we always render SWYD-FIREWALL, whose jumps BaseJumps installs.
		for name := range g {
			if _, ok := w[name]; !ok && !(tbl == "filter" && name == ChainFirewall) {
				t.Errorf("%s: we render chain %s, upstream does not", tbl, name)
			}
		}
		for name, wantRules := range w {
			gotRules, ok := g[name]
			switch {
			case !ok:
				t.Errorf("%s: upstream renders chain %s, we do not", tbl, name)
				continue
			case slices.Contains(unordered, name):
				wantRules, gotRules = sorted(wantRules), sorted(gotRules)
			}
			if !slices.Equal(gotRules, wantRules) {
				t.Errorf("%s %s:\n got: %s\nwant: %s", tbl, name, strings.Join(gotRules, "\n      "), strings.Join(wantRules, "\n      "))
			}
		}
	}
	if s := got["nat"][ChainServices]; !strings.Contains(s[len(s)-1], "-j "+ChainNodePorts) {
		t.Errorf("the NodePort jump is not the last rule of nat %s: %v", ChainServices, s)
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

// parseRestore splits iptables-restore input into table -> chain -> rules.
func parseRestore(t *testing.T, text string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	var tbl map[string][]string
	for _, l := range strings.Split(text, "\n") {
		switch {
		case l == "" || l == "COMMIT":
		case strings.HasPrefix(l, "*"):
			tbl = map[string][]string{}
			out[l[1:]] = tbl
		case strings.HasPrefix(l, ":"):
			tbl[strings.Fields(l[1:])[0]] = []string{}
		case strings.HasPrefix(l, "-A "):
			chain := strings.Fields(l)[1]
			tbl[chain] = append(tbl[chain], l)
		default:
			t.Fatalf("unexpected line %q", l)
		}
	}
	return out
}
