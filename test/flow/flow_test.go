package flow

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/switchyard/switchyard/watcher"
)

const sample = `{ "cases": [ {
  "name": "clusterip",
  "note": "unknown fields are ignored",
  "node": { "name": "node-a", "ips": ["192.168.0.2"] },
  "config": { "clusterCIDR": "10.0.0.0/8" },
  "services": [ { "namespace": "ns1", "name": "svc1", "type": "LoadBalancer", "clusterIP": "172.30.0.41",
      "loadBalancerIPs": ["1.2.3.4"], "externalTrafficPolicy": "Local",
      "ports": [ { "name": "p80", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30001 } ] } ],
  "endpointSlices": [ { "namespace": "ns1", "service": "svc1", "name": "svc1-abc", "addressType": "IPv4",
      "ports": [ { "name": "p80", "protocol": "TCP", "port": 8080 }, { "name": "dns", "protocol": "UDP", "port": 53 } ],
      "endpoints": [ { "addresses": ["10.180.0.1"], "ready": true, "nodeName": "node-a" },
                     { "addresses": ["10.180.0.2"], "ready": true, "nodeName": null } ] } ],
  "flows": [
    { "name": "pod", "sourceIP": "10.0.0.2", "destIP": "172.30.0.41", "destPort": 80, "protocol": "TCP",
      "output": "10.180.0.1:8080, 10.180.0.2:8080" },
    { "name": "hairpin", "sourceIP": "10.180.0.2", "destIP": "172.30.0.41", "destPort": 80, "protocol": "TCP",
      "output": "10.180.0.1:8080, 10.180.0.2:8080", "masq": true },
    { "name": "node", "sourceIP": "192.168.0.2", "destIP": "172.30.0.41", "destPort": 80, "protocol": "TCP", "output": "REJECT" },
    { "name": "ext", "sourceIP": "203.0.113.9", "destIP": "1.2.3.4", "destPort": 80, "protocol": "UDP", "output": "DROP" } ]
} ] }`

func loadSample(t *testing.T) Case {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.json")
	if err := os.WriteFile(p, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	cases, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return cases[0]
}

func TestLoadAndClassify(t *testing.T) {
	c := loadSample(t)
	want := map[string]SourceKind{"10.0.0.2": PodSource, "10.180.0.2": EndpointSource, "192.168.0.2": NodeSource,
		"127.0.0.1": NodeSource, "203.0.113.9": ExternalSource}
	for ip, k := range want {
		if got := c.SourceKind(ip); got != k {
			t.Errorf("%s: %v, want %v", ip, got, k)
		}
	}
	pods := c.Pods()
	if len(pods) != 3 || !pods[0].Local || pods[1].Local || !pods[2].Local || pods[2].IP != "10.0.0.2" ||
		len(pods[0].TCP) != 1 || pods[0].UDP[0] != 53 {
		t.Errorf("pods %+v", pods)
	}
	if ext := c.ExternalClients(); len(ext) != 1 || ext[0] != "203.0.113.9" {
		t.Errorf("external clients %v", ext)
	}
}

func TestToObjects(t *testing.T) {
	c := loadSample(t)
	o := c.ToObjects()
	svc := o.Services[0]
	if svc.Spec.Ports[0].NodePort != 30001 || svc.Spec.Ports[0].TargetPort.IntVal != 8080 ||
		svc.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal || svc.Status.LoadBalancer.Ingress[0].IP != "1.2.3.4" {
		t.Errorf("service %+v", svc)
	}
	sl := o.EndpointSlices[0]
	if sl.Labels["kubernetes.io/service-name"] != "svc1" || *sl.Endpoints[0].NodeName != "node-a" || sl.Endpoints[1].NodeName != nil {
		t.Errorf("slice %+v", sl)
	}
	if o.Node.Status.Addresses[0].Address != "192.168.0.2" {
		t.Errorf("node %+v", o.Node)
	}
}

func TestLoadErrors(t *testing.T) {
	for name, mutate := range map[string]func(string) string{
		"bad output": func(s string) string { return strings.Replace(s, `"REJECT"`, `"REJECTED"`, 1) },
		"bad protocol": func(s string) string {
			return strings.Replace(s, `"protocol": "UDP", "output"`, `"protocol": "ICMP", "output"`, 1)
		},
		"bad source": func(s string) string { return strings.Replace(s, `"10.0.0.2"`, `"10.0.0"`, 1) },
		"not json":   func(s string) string { return s[:40] },
	} {
		p := filepath.Join(t.TempDir(), "f.json")
		if err := os.WriteFile(p, []byte(mutate(sample)), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v does not name the file", name, err)
		}
	}
}

func TestJudge(t *testing.T) {
	two, _ := ParseOutput("10.180.0.2:80, 10.180.0.1:80")
	ok := func(ep, peer string) Result { return Result{Result: "ok", Endpoint: ep, Peer: peer} }
	f := Flow{SourceIP: "10.0.0.2"}
	for _, tc := range []struct {
		name    string
		flow    Flow
		out     Output
		results []Result
		masq    bool
		pass    bool
	}{
		{"all endpoints seen", f, two, []Result{ok("10.180.0.1:80", "10.0.0.2:1"), ok("10.180.0.2:80", "10.0.0.2:2")}, true, true},
		{"one endpoint missing", f, two, []Result{ok("10.180.0.1:80", "10.0.0.2:1")}, true, false},
		{"an endpoint outside the set", f, two, []Result{ok("10.180.0.1:80", "10.0.0.2:1"), ok("10.180.0.2:80", "x"), ok("10.180.0.3:80", "10.0.0.2:3")}, false, false},
		{"a failed connection", f, two, []Result{ok("10.180.0.1:80", "10.0.0.2:1"), ok("10.180.0.2:80", "10.0.0.2:2"), {Result: "timeout"}}, true, false},
		{"unexpected masquerade", f, two, []Result{ok("10.180.0.1:80", "192.168.0.2:1"), ok("10.180.0.2:80", "10.0.0.2:2")}, true, false},
		{"masquerade not asserted on the node", f, two, []Result{ok("10.180.0.1:80", "192.168.0.2:1"), ok("10.180.0.2:80", "10.0.0.2:2")}, false, true},
		{"expected masquerade", Flow{SourceIP: "10.0.0.2", Masq: true}, two, []Result{ok("10.180.0.1:80", "192.168.0.2:1"), ok("10.180.0.2:80", "192.168.0.2:2")}, true, true},
		{"affinity: one endpoint", Flow{SourceIP: "10.0.0.2", Affinity: true}, two, []Result{ok("10.180.0.1:80", "10.0.0.2:1"), ok("10.180.0.1:80", "10.0.0.2:2")}, true, true},
		{"affinity broken", Flow{SourceIP: "10.0.0.2", Affinity: true}, two, []Result{ok("10.180.0.1:80", "10.0.0.2:1"), ok("10.180.0.2:80", "10.0.0.2:2")}, true, false},
		{"reject", f, Output{Kind: Reject}, []Result{{Result: "refused"}, {Result: "refused"}}, true, true},
		{"reject but dropped", f, Output{Kind: Reject}, []Result{{Result: "timeout"}}, true, false},
		{"drop", f, Output{Kind: Drop}, []Result{{Result: "timeout"}}, true, true},
		{"drop but answered", f, Output{Kind: Drop}, []Result{ok("10.180.0.1:80", "x")}, true, false},
		{"untouched", f, Output{Kind: Untouched}, []Result{{Result: "timeout"}}, true, true},
		{"no results", f, two, nil, true, false},
	} {
		if v := Judge(tc.flow, tc.out, tc.results, tc.masq); v.Pass != tc.pass {
			t.Errorf("%s: pass=%v (got %s), want %v", tc.name, v.Pass, v.Got, tc.pass)
		}
	}
}

// The flow files in the repo stay loadable.
func TestRepoFlowFiles(t *testing.T) {
	paths, err := filepath.Glob("../flows/*.json")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no flow files: %v", err)
	}
	paths = append(paths, "../../deploy/demo/flows.json") // make demo's
	cases, err := Load(paths...)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if len(c.Flows) == 0 {
			t.Errorf("case %q has no flows", c.Name)
		}
	}
}

func TestServiceCIDRs(t *testing.T) {
	c := func(cidrs ...string) Case { return Case{Name: "c", Config: Config{ServiceCIDRs: cidrs}} }
	got, err := ServiceCIDRs([]Case{c("fd00:30::/108"), c("172.30.0.0/16"), c()})
	if err != nil || strings.Join(got, ",") != "172.30.0.0/16,fd00:30::/108" {
		t.Errorf("got %v, %v", got, err)
	}
	if _, err := ServiceCIDRs([]Case{c("172.30.0.0/16"), c("10.96.0.0/12")}); err == nil {
		t.Error("disagreeing cases must fail")
	}
}

// What the runner writes for --source=file is what Switchyard's file source reads.
func TestWriteManifestsRoundTrip(t *testing.T) {
	c := loadSample(t)
	dir := t.TempDir()
	if err := c.ToObjects().WriteManifests(dir); err != nil {
		t.Fatal(err)
	}
	objs, err := watcher.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Services) != 1 || len(objs.EndpointSlices) != 1 || len(objs.Nodes) != 1 ||
		objs.Services[0].Status.LoadBalancer.Ingress[0].IP != "1.2.3.4" {
		t.Errorf("loaded %+v", objs)
	}
}
