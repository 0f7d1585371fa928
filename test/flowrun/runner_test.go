package flowrun

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/test/controlplane"
	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/topology"
)

// One real case against upstream kube-proxy in which most expectations are wrong:
// the runner must fail exactly those, so a green flow run means something.
const selfTest = `{ "cases": [ {
  "name": "self test",
  "node": { "name": "node-a", "ips": ["192.168.0.2"] },
  "config": { "clusterCIDR": "10.0.0.0/8" },
  "services": [
    { "namespace": "self", "name": "web", "type": "ClusterIP", "clusterIP": "172.30.0.100",
      "ports": [ { "name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080 } ] },
    { "namespace": "self", "name": "empty", "type": "ClusterIP", "clusterIP": "172.30.0.101",
      "ports": [ { "name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080 } ] } ],
  "endpointSlices": [ { "namespace": "self", "service": "web", "name": "web-1", "addressType": "IPv4",
      "ports": [ { "name": "http", "protocol": "TCP", "port": 8080 } ],
      "endpoints": [ { "addresses": ["10.0.1.1"], "ready": true, "nodeName": "node-a" },
                     { "addresses": ["10.0.2.1"], "ready": true, "nodeName": "node-b" } ] } ],
  "flows": [
    { "name": "right", "sourceIP": "10.0.1.100", "destIP": "172.30.0.100", "destPort": 80, "protocol": "TCP",
      "output": "10.0.1.1:8080, 10.0.2.1:8080" },
    { "name": "an endpoint too few", "sourceIP": "10.0.1.100", "destIP": "172.30.0.100", "destPort": 80, "protocol": "TCP",
      "output": "10.0.1.1:8080" },
    { "name": "masquerade that does not happen", "sourceIP": "10.0.1.100", "destIP": "172.30.0.100", "destPort": 80,
      "protocol": "TCP", "output": "10.0.1.1:8080, 10.0.2.1:8080", "masq": true },
    { "name": "REJECT that is forwarded", "sourceIP": "10.0.1.100", "destIP": "172.30.0.100", "destPort": 80,
      "protocol": "TCP", "output": "REJECT" },
    { "name": "DROP that is rejected", "sourceIP": "10.0.1.100", "destIP": "172.30.0.101", "destPort": 80,
      "protocol": "TCP", "output": "DROP" },
    { "name": "untouched that is proxied", "sourceIP": "10.0.1.100", "destIP": "172.30.0.100", "destPort": 80,
      "protocol": "TCP", "output": "" },
    { "name": "SCTP", "sourceIP": "10.0.1.100", "destIP": "172.30.0.100", "destPort": 80, "protocol": "SCTP",
      "output": "REJECT" } ]
} ] }`

// A case before it that the API server refuses (a nodePort outside the range, as
// in upstream's proxier tests): one error line, counted as failed, and the run
// goes on with the self test.
const refusedCase = `{ "cases": [ {
  "name": "refused",
  "node": { "name": "node-a", "ips": ["192.168.0.2"] },
  "services": [
    { "namespace": "self", "name": "np", "type": "NodePort", "clusterIP": "172.30.0.102",
      "ports": [ { "name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 3001 } ] } ],
  "flows": [ { "name": "never probed", "sourceIP": "10.0.1.100", "destIP": "172.30.0.102", "destPort": 80,
      "protocol": "TCP", "output": "DROP" } ]
} ] }`

func TestRunnerFailsWrongExpectations(t *testing.T) {
	if err := topology.Prerequisites(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %v", err)
		}
		t.Skipf("the topology needs: %v", err)
	}
	bin := controlplane.Require(t)
	ctx := context.Background()
	dir := t.TempDir()
	refused, path := filepath.Join(dir, "refused.json"), filepath.Join(dir, "self.json")
	for p, data := range map[string]string{refused: refusedCase, path: selfTest} {
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases, err := flow.Load(refused, path)
	if err != nil {
		t.Fatal(err)
	}
	echo, probe, err := topology.BuildBinaries(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	cp := controlplane.StartForTest(t, controlplane.Options{BinDir: bin})
	var out bytes.Buffer
	rep, err := Run(ctx, Options{
		Proxy: "kube-proxy-nftables", Source: "apiserver", Out: &out,
		EchoBin: echo, ProbeBin: probe, KubeProxyBin: filepath.Join(bin, "kube-proxy"), API: cp,
	}, cases)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^ERROR refused \(.*refused\.json\): .*nodePort`).MatchString(out.String()) {
		t.Error("no error line for the refused case")
	}
	want := map[string]string{
		"": "ERROR", "right": "PASS", "an endpoint too few": "FAIL", "masquerade that does not happen": "FAIL",
		"REJECT that is forwarded": "FAIL", "DROP that is rejected": "FAIL", "untouched that is proxied": "FAIL",
		"SCTP": "SKIP",
	}
	for _, oc := range rep.Outcomes {
		if want[oc.Flow] != oc.Status {
			t.Errorf("%s: %s (got %s), want %s", oc.Flow, oc.Status, oc.Got, want[oc.Flow])
		}
	}
	if len(rep.Outcomes) != len(want) || rep.Summary() != "1 passed, 6 failed, 1 skipped" {
		t.Errorf("summary %q", rep.Summary())
	}
}

func TestSyncedNeedsEveryFamily(t *testing.T) {
	const v4only = "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} 1.7e+09\n"
	const both = v4only + "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv6\"} 1.7e+09\n"
	if synced(v4only, []string{"IPv4", "IPv6"}) || !synced(both, []string{"IPv4", "IPv6"}) || !synced(v4only, []string{"IPv4"}) {
		t.Error("a dual-stack node is synced only when both families are")
	}
	if synced("kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} 0\n", []string{"IPv4"}) {
		t.Error("a zero timestamp is no sync")
	}
}

// A case that cannot be set up (an object the API server refuses, an ip command
// that fails) is an error line counted as failed, and the cases after it run.
func TestRunGoesOnAfterACaseError(t *testing.T) {
	cases := []flow.Case{
		{Name: "broken", File: "a.json", Flows: []flow.Flow{{Name: "b1"}, {Name: "b2"}}},
		{Name: "good", File: "a.json", Flows: []flow.Flow{{Name: "g1"}, {Name: "g2"}}},
	}
	fake, ran := fakeCases(map[string]error{"broken": errors.New("publish: Service \"x\" is invalid")})
	var out bytes.Buffer
	rep, err := Options{Proxy: "switchyard-ebpf", Out: &out}.run(context.Background(), cases, fake)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatalf("a case that cannot be set up ended the run: %v", err)
	}
	if !slices.Equal(*ran, []string{"broken", "good"}) {
		t.Errorf("cases run: %v", *ran)
	}
	if !strings.Contains(out.String(), "ERROR broken (a.json): publish: Service \"x\" is invalid\n") {
		t.Error("no error line for the broken case")
	}
	if got := rep.Summary(); got != "2 passed, 1 failed, 0 skipped" {
		t.Errorf("summary %q", got)
	}
	if n := len(rep.Outcomes); n != 3 || rep.Outcomes[0].Status != "ERROR" {
		t.Errorf("outcomes %+v", rep.Outcomes)
	}
}

// An interrupted run stops: the error is the harness's, and no case runs after it.
func TestRunStopsWhenInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []flow.Case{{Name: "first", Flows: []flow.Flow{{Name: "f"}}}, {Name: "second", Flows: []flow.Flow{{Name: "s"}}}}
	fake, ran := fakeCases(map[string]error{"first": context.Canceled})
	rep, err := Options{Proxy: "switchyard-ebpf", Out: &bytes.Buffer{}}.run(ctx, cases, fake)
	if !errors.Is(err, context.Canceled) || !slices.Equal(*ran, []string{"first"}) {
		t.Errorf("error %v after running %v", err, *ran)
	}
	if rep == nil || rep.Failed != 0 {
		t.Errorf("report %+v", rep)
	}
}

// fakeCases stands in for runCase: a case in fail returns that error, any other
// passes every flow. ran lists the cases it was asked to run.
func fakeCases(fail map[string]error) (caseFunc, *[]string) {
	ran := &[]string{}
	return func(_ context.Context, c flow.Case, flows []flow.Flow) ([]Outcome, error) {
		*ran = append(*ran, c.Name)
		if err := fail[c.Name]; err != nil {
			return nil, err
		}
		var out []Outcome
		for _, f := range flows {
			out = append(out, Outcome{Case: c.Name, Flow: f.Name, Status: "PASS"})
		}
		return out, nil
	}, ran
}
