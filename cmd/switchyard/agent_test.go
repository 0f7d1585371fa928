package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// lockedBuffer lets the test read what the agent's print backend writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The agent follows its manifests: a change is synced partially, a malformed file
// changes nothing, and fixing it is picked up.
func TestAgentFollowsFileSource(t *testing.T) {
	dir := t.TempDir()
	svc := func(port string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {namespace: ns, name: web}\n" +
			"spec: {clusterIP: 172.30.0.1, ports: [{name: http, port: " + port + "}]}\n"
	}
	writeFile(t, dir, "node.yaml", "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n"+
		"status: {addresses: [{type: InternalIP, address: 192.168.0.2}]}\n")
	writeFile(t, dir, "svc.yaml", svc("80"))

	o := newOptions()
	o.addFlags(pflag.NewFlagSet("agent", pflag.ContinueOnError))
	o.mode, o.source, o.hostnameOverride = "print", "file:"+dir, "node-a"
	o.healthzBindAddress, o.metricsBindAddress, o.statusBindAddress = "", "", "" // no sockets in tests
	cfg, err := o.complete()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out lockedBuffer
	done := make(chan error, 1)
	go func() { done <- runAgent(ctx, cfg, &out, &out) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()

	waitFor(t, "the first sync", func() bool { return strings.Contains(out.String(), "172.30.0.1:80/TCP") })
	writeFile(t, dir, "svc.yaml", svc("81"))
	waitFor(t, "a partial sync of the change", func() bool {
		return strings.Contains(out.String(), "partial, 2 frontends changed") && strings.Contains(out.String(), "172.30.0.1:81/TCP")
	})
	before := out.String()
	writeFile(t, dir, "svc.yaml", svc("82")+"  bogusField: 1\n")
	time.Sleep(2500 * time.Millisecond) // two poll intervals
	if after := out.String(); after != before {
		t.Errorf("a malformed manifest changed the state:\n%s", strings.TrimPrefix(after, before))
	}
	writeFile(t, dir, "svc.yaml", svc("83"))
	waitFor(t, "the fixed manifest", func() bool { return strings.Contains(out.String(), "172.30.0.1:83/TCP") })
}

// The shipped DaemonSet runs the agent with flags the agent accepts.
func TestDaemonSetFlagsAreValid(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "base", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(data, &ds); err != nil {
		t.Fatal(err)
	}
	cmd := ds.Spec.Template.Spec.Containers[0].Command
	if len(cmd) < 2 || cmd[1] != "agent" {
		t.Fatalf("command %v does not run the agent", cmd)
	}
	o := newOptions()
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	o.addFlags(fs)
	args := strings.Join(cmd[2:], "\x00")
	args = strings.ReplaceAll(args, "$(NODE_NAME)", "node-a")
	if err := fs.Parse(strings.Split(args, "\x00")); err != nil {
		t.Fatal(err)
	}
	if _, err := o.complete(); err != nil {
		t.Fatal(err)
	}
}
