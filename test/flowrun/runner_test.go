package flowrun

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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
	path := filepath.Join(dir, "self.json")
	if err := os.WriteFile(path, []byte(selfTest), 0o644); err != nil {
		t.Fatal(err)
	}
	cases, err := flow.Load(path)
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
	want := map[string]string{
		"right": "PASS", "an endpoint too few": "FAIL", "masquerade that does not happen": "FAIL",
		"REJECT that is forwarded": "FAIL", "DROP that is rejected": "FAIL", "untouched that is proxied": "FAIL",
		"SCTP": "SKIP",
	}
	for _, oc := range rep.Outcomes {
		if want[oc.Flow] != oc.Status {
			t.Errorf("%s: %s (got %s), want %s", oc.Flow, oc.Status, oc.Got, want[oc.Flow])
		}
	}
	if len(rep.Outcomes) != len(want) || rep.Summary() != "1 passed, 5 failed, 1 skipped" {
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
