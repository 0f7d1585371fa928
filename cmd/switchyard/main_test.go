package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/switchyard/switchyard/dataplane"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestBadFlagsExit2NamingTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agent", "--mode=bogus"}, "--mode"},
		{[]string{"agent", "--no-such-flag"}, "no-such-flag"},
		{[]string{"agent", "--cluster-cidr=10.0.0.0/33"}, "--cluster-cidr"},
		{[]string{"agent", "--nodeport-addresses=10.0.0.1"}, "--nodeport-addresses"},
		{[]string{"agent", "--node-port-range=32767-30000"}, "--node-port-range"},
		{[]string{"agent", "--healthz-bind-address=localhost"}, "--healthz-bind-address"},
		{[]string{"agent", "--metrics-bind-address=nothost:10249"}, "--metrics-bind-address"},
		{[]string{"agent", "--status-bind-address=10266"}, "--status-bind-address"},
		{[]string{"agent", "--sync-period=0s"}, "--sync-period"},
		{[]string{"agent", "--sync-period=soon"}, "sync-period"},
		{[]string{"agent", "--source=ftp://x"}, "--source"},
		{[]string{"agent", "--iptables-variant=bogus"}, "--iptables-variant"},
		{[]string{"agent", "--iptables-masquerade-bit=32"}, "--iptables-masquerade-bit"},
		{[]string{"agent", "extra-arg"}, "unexpected arguments"},
		{[]string{"cleanup", "--node-port-range=x"}, "--node-port-range"},
		{[]string{"cleanup", "--drain-timeout=-1s"}, "--drain-timeout"},
		{[]string{"agent", "--bpf-root=relative/pins"}, "--bpf-root"},
		{[]string{"agent", "--cgroup-root=sub"}, "--cgroup-root"},
		{[]string{"agent", "--procfs=host/proc"}, "--procfs"},
		{[]string{"agent", "--bpf-max-backends=3"}, "--bpf-max"},
		{[]string{"agent", "--bpf-max-services=-1"}, "bpf-max-services"},
		{[]string{"agent", "--mode=ebpf", "--masquerade-all"}, "--masquerade-all: eBPF mode cannot masquerade"},
	} {
		code, _, stderr := runCLI(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 naming %q", tc.args, code, stderr, tc.want)
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: 10.244.0.0/16
hostnameOverride: from-config
nodePortAddresses: ["192.168.0.0/24"]
metricsBindAddress: 127.0.0.1:19999
iptables:
  masqueradeAll: true
  localhostNodePorts: false
  syncPeriod: 45s
  minSyncPeriod: 2s
conntrack:
  maxPerCore: 32768
oomScoreAdj: -999
`

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "config.yaml", goodConfig)

	t.Run("fields map onto flags; the command line wins", func(t *testing.T) {
		o := newOptions()
		fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
		o.addFlags(fs)
		if err := fs.Parse([]string{"--config", path, "--hostname-override=from-flag", "--mode=print"}); err != nil {
			t.Fatal(err)
		}
		c, err := o.complete()
		if err != nil {
			t.Fatal(err)
		}
		if c.model.NodeName != "from-flag" || c.mode != "print" {
			t.Errorf("flags must override the file: node %q mode %q", c.model.NodeName, c.mode)
		}
		if len(c.model.ClusterCIDRs) != 1 || c.model.ClusterCIDRs[0].String() != "10.244.0.0/16" ||
			!c.model.MasqueradeAll || c.model.LocalhostNodePorts || c.syncPeriod != 45*time.Second ||
			c.minSyncPeriod != 2*time.Second || c.metricsAddr != "127.0.0.1:19999" ||
			len(c.model.NodePortAddresses.CIDRs) != 1 {
			t.Errorf("config not applied: %+v", c)
		}
	})

	t.Run("fields Switchyard does not use are reported", func(t *testing.T) {
		var raw map[string]any
		if err := yaml.Unmarshal([]byte(goodConfig), &raw); err != nil {
			t.Fatal(err)
		}
		if got := ignoredFields(raw); !slices.Equal(got, []string{"conntrack.maxPerCore", "oomScoreAdj"}) {
			t.Errorf("ignored %v", got)
		}
	})

	for name, content := range map[string]string{
		"unknown field": strings.Replace(goodConfig, "clusterCIDR:", "clusterCIRD:", 1),
		"wrong kind":    strings.Replace(goodConfig, "kind: KubeProxyConfiguration", "kind: Config", 1),
		"bad value":     strings.Replace(goodConfig, "clusterCIDR: 10.244.0.0/16", "clusterCIDR: nope", 1),
		"unknown mode":  strings.Replace(goodConfig, "mode: iptables", "mode: kernelspace", 1),
		"not yaml":      "{{{",
	} {
		t.Run("bad config: "+name, func(t *testing.T) {
			p := writeFile(t, dir, "bad.yaml", content)
			code, _, stderr := runCLI(t, "agent", "--config", p)
			if code != 2 || !strings.Contains(stderr, "--c") {
				t.Errorf("exit %d, stderr %q", code, stderr)
			}
		})
	}
}

func TestPrintDemoManifests(t *testing.T) {
	code, stdout, stderr := runCLI(t, "agent", "--mode=print", "--source=file:../../deploy/examples",
		"--hostname-override=node-a", "--cluster-cidr=10.0.0.0/16", "--once")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	flat := strings.Join(strings.Fields(stdout), " ")
	for _, want := range []string{
		// NodePort, Cluster policy: masqueraded, on the node address and localhost.
		"demo/shop:http/TCP NodePort 192.168.0.2:30080/TCP",
		"demo/shop:http/TCP NodePort 127.0.0.1:30080/TCP",
		// LoadBalancer with eTP Local: outside clients reach the local endpoint only.
		"demo/edge:https/TCP LoadBalancer 192.0.2.50:443/TCP 10.0.1.12:8443(L),10.0.2.12:8443 10.0.1.12:8443(L),10.0.2.12:8443 +masq 10.0.1.12:8443(L) eTP=Local sourceRanges=203.0.113.0/25,198.51.100.0/24 healthCheckNodePort=32100",
		"! demo/edge InvalidSourceRange",
		// externalIP and ClientIP affinity.
		"demo/sticky:http/TCP ExternalIP 198.51.100.77:80/TCP",
		"affinity=ClientIP/10m0s",
		// iTP Local.
		"demo/node-local:http/TCP ClusterIP 172.30.0.14:80/TCP 10.0.1.14:8080(L) 10.0.1.14:8080(L) +masq 10.0.1.14:8080(L) +masq iTP=Local",
		// Terminating fallback: only the serving one.
		"demo/draining:http/TCP ClusterIP 172.30.0.15:80/TCP 10.0.1.15:8080(LT)",
		// No endpoints.
		"demo/empty:http/TCP ClusterIP 172.30.0.16:80/TCP REJECT REJECT REJECT",
		"! demo/out-of-range NodePortOutOfRange",
		// UDP port of a multi-port service.
		"demo/web:dns/UDP ClusterIP 172.30.0.10:53/UDP 10.0.1.10:5353(L),10.0.2.10:5353",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "headless") || strings.Contains(stdout, ":40000/") {
		t.Errorf("skipped frontends printed:\n%s", stdout)
	}
}

// A slice port the API would refuse is reported and left out, never wrapped into a port.
func TestPrintReportsInvalidEndpointPort(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "web.yaml", `apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns}
spec: {clusterIP: 172.30.0.1, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: ns, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: -1}]
endpoints: [{addresses: [10.0.1.1]}]
`)
	code, stdout, stderr := runCLI(t, "agent", "--mode=print", "--source=file:"+dir, "--hostname-override=node-a", "--once")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	flat := strings.Join(strings.Fields(stdout), " ")
	want := `! ns/web InvalidEndpointPort: EndpointSlice web-1: port "" has number -1; ignored`
	if !strings.Contains(flat, want) || strings.Contains(flat, "65535") {
		t.Errorf("output lacks %q or shows a wrapped port:\n%s", want, stdout)
	}
}

func TestMalformedManifestIsAClearError(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns}\nspec:\n  prots: []\n")
	code, _, stderr := runCLI(t, "agent", "--mode=print", "--source=file:"+dir, "--hostname-override=n", "--once")
	if code == 0 || !strings.Contains(stderr, "svc.yaml") || !strings.Contains(stderr, "ns/web") || !strings.Contains(stderr, "prots") {
		t.Errorf("exit %d, stderr %q: want an error naming the file, the object and the field", code, stderr)
	}
}

func TestResolveMode(t *testing.T) {
	ok := func() error { return nil }
	missing := func() error { return errors.New("bpf: missing: widgets") }
	var log bytes.Buffer
	if c := resolveMode("auto", ok, &log); c.mode != "ebpf" || c.fallback != "" {
		t.Errorf("auto with every feature: %+v", c)
	}
	c := resolveMode("auto", missing, &log)
	if c.mode != "iptables" || !strings.Contains(log.String(), "widgets") {
		t.Errorf("auto without a feature: %+v, log %q", c, log.String())
	}
	reg := prometheus.NewRegistry()
	c.register(reg)
	want := `
# HELP switchyard_dataplane_info The dataplane this agent runs (1): the mode, the --mode asked for, and why auto fell back from ebpf (empty when it did not).
# TYPE switchyard_dataplane_info gauge
switchyard_dataplane_info{fallback_reason="bpf: missing: widgets",mode="iptables",requested="auto"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "switchyard_dataplane_info"); err != nil {
		t.Error(err)
	}
	if c := resolveMode("print", missing, &log); c.mode != "print" || c.fallback != "" {
		t.Errorf("an explicit mode is kept: %+v", c)
	}
	// eBPF mode cannot masquerade what its socket hooks translate: auto must not pick it then.
	masqAll := &agentConfig{model: dataplane.Config{MasqueradeAll: true}}
	if c := resolveMode("auto", ebpfProbe(masqAll, ok), &log); c.mode != "iptables" || !strings.Contains(c.fallback, "--masquerade-all") {
		t.Errorf("auto with --masquerade-all: %+v", c)
	}
}

// The minimum sync period's default belongs to the mode the agent runs, which
// auto learns only at start.
func TestMinSyncPeriodFollowsTheResolvedMode(t *testing.T) {
	for _, tc := range []struct {
		args []string
		mode string
		want time.Duration
	}{
		{[]string{"--mode=auto"}, "iptables", time.Second},
		{[]string{"--mode=auto"}, "ebpf", 0},
		{[]string{"--mode=iptables"}, "iptables", time.Second},
		{[]string{"--mode=ipvs"}, "ipvs", time.Second},
		{[]string{"--mode=auto", "--min-sync-period=0s"}, "iptables", 0},
		{[]string{"--mode=auto", "--min-sync-period=3s"}, "ebpf", 3 * time.Second},
	} {
		o := newOptions()
		fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
		o.addFlags(fs)
		if err := fs.Parse(append(tc.args, "--hostname-override=n")); err != nil {
			t.Fatal(err)
		}
		c, err := o.complete()
		if err != nil {
			t.Fatal(err)
		}
		if got := c.minSyncPeriodFor(tc.mode); got != tc.want {
			t.Errorf("%v resolved to %s: min sync period %s, want %s", tc.args, tc.mode, got, tc.want)
		}
	}
}

func TestReservedPorts(t *testing.T) {
	// As in the DaemonSet: the node's /proc/sys/net mounted under --procfs.
	procfs := t.TempDir()
	path := reservedPortsPath(procfs)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Dir(path), "ip_local_reserved_ports", "8080,30500-30600,40000\n")
	r := dataplane.PortRange{Base: 30000, Size: 2768}
	if err := updateReservedPorts(path, r, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "8080,30000-32767,40000\n" {
		t.Errorf("after reserving: %q", got)
	}
	if err := updateReservedPorts(path, r, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "8080,40000\n" {
		t.Errorf("after releasing: %q", got)
	}
	writeFile(t, filepath.Dir(path), "ip_local_reserved_ports", "what\n")
	if err := updateReservedPorts(path, r, true); err == nil || !strings.Contains(err.Error(), "what") {
		t.Errorf("garbage in the sysctl: %v", err)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(stdout, "switchyard ") {
		t.Errorf("exit %d, %q", code, stdout)
	}
}
