package watcher

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

const webService = `# the web service
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: 10.96.0.10
  ports:
  - port: 80
`

const webSlice = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- port: 8080
endpoints:
- addresses: ["10.0.0.5"]
  nodeName: n1
`

const nodes = `apiVersion: v1
kind: Node
metadata:
  name: n1
---
apiVersion: v1
kind: Node
metadata:
  name: n2
`

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFileSourceAppliesChanges(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "web.yaml", webService+"---\n"+webSlice)
	writeFile(t, dir, "nodes.yml", nodes)
	writeFile(t, dir, "README.md", "not a manifest")
	sink := newRecSink()
	fs := NewFileSource(dir, "n1", sink, 0)

	fs.poll()
	wantCalls(t, sink.take(), "upsert service default/web", "upsert slice default/web-1", "node n1",
		"synced services", "synced endpointslices", "synced node")
	checkDefaults(t, sink)
	fs.poll()
	wantCalls(t, sink.take())

	writeFile(t, dir, "web.yaml", strings.Replace(webService, "port: 80", "port: 81", 1)+"---\n"+webSlice)
	fs.poll()
	wantCalls(t, sink.take(), "upsert service default/web")

	writeFile(t, dir, "web.yaml", webService)
	fs.poll()
	wantCalls(t, sink.take(), "upsert service default/web", "delete slice default/web-1")

	if err := os.Remove(filepath.Join(dir, "nodes.yml")); err != nil {
		t.Fatal(err)
	}
	fs.poll()
	wantCalls(t, sink.take(), "node <nil>")
	if err := fs.LastError(); err != nil {
		t.Errorf("LastError after good reads: %v", err)
	}
}

func checkDefaults(t *testing.T, sink *recSink) {
	t.Helper()
	svc := sink.obj("upsert service default/web").(*v1.Service)
	if svc.Spec.Type != v1.ServiceTypeClusterIP || svc.Spec.SessionAffinity != v1.ServiceAffinityNone ||
		svc.Spec.Ports[0].Protocol != v1.ProtocolTCP {
		t.Errorf("service defaults not applied: %+v", svc.Spec)
	}
	sl := sink.obj("upsert slice default/web-1").(*discovery.EndpointSlice)
	if sl.Ports[0].Protocol == nil || *sl.Ports[0].Protocol != v1.ProtocolTCP {
		t.Errorf("slice port protocol not defaulted: %+v", sl.Ports[0])
	}
}

func TestFileSourceKeepsLastGoodSet(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "web.yaml", webService)
	sink := newRecSink()
	fs := NewFileSource(dir, "n1", sink, time.Second)
	fs.poll()
	sink.take()

	web3 := strings.Replace(webService, "name: web", "name: web3", 1)
	bad := []struct{ name, content, want string }{
		{"unknown field", web3 + "---\n" + strings.Replace(webService, "  ports:", "  prots:", 1),
			`web.yaml: document 2 (Service default/web): unknown field "spec.prots"`},
		{"bad yaml", web3 + "---\napiVersion: v1\nkind: [Service\n", "web.yaml: document 2: "},
	}
	for _, b := range bad {
		// web.yaml adds web3, web2.yaml adds web2: nothing of a bad set may apply.
		writeFile(t, dir, "web.yaml", b.content)
		writeFile(t, dir, "web2.yaml", strings.Replace(webService, "name: web", "name: web2", 1))
		fs.poll()
		fs.poll()
		wantCalls(t, sink.take())
		if err := fs.LastError(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: LastError = %v, want it to contain %q", b.name, err, b.want)
		}
	}

	writeFile(t, dir, "web.yaml", webService)
	fs.poll()
	wantCalls(t, sink.take(), "upsert service default/web2")
	if err := fs.LastError(); err != nil {
		t.Errorf("LastError after fix: %v", err)
	}
}

func TestFileSourceMissingPath(t *testing.T) {
	sink := newRecSink()
	path := filepath.Join(t.TempDir(), "nope")
	fs := NewFileSource(path, "n1", sink, time.Second)
	fs.poll()
	wantCalls(t, sink.take())
	if err := fs.LastError(); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("LastError = %v, want it to name %s", err, path)
	}
	if err := os.WriteFile(path, []byte(webService), 0o644); err != nil {
		t.Fatal(err)
	}
	fs.poll()
	wantCalls(t, sink.take(), "upsert service default/web", "node <nil>",
		"synced services", "synced endpointslices", "synced node")
}

func TestFileSourceRunStopsWithContext(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "web.yaml", webService)
	sink := newRecSink()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- NewFileSource(dir, "n1", sink, time.Hour).Run(ctx) }()
	sink.waitFor(t, "synced node", 1)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// Documents that did not change are not decoded again: their objects are the very
// same, which keeps re-reading a large manifest cheap.
func TestParseReusesUnchangedDocuments(t *testing.T) {
	ms := []manifest{{name: "web.yaml", data: []byte(webService + "---\n" + webSlice)}}
	first, cache, err := parseManifests(ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	ms[0].data = []byte(strings.Replace(webService, "port: 80", "port: 81", 1) + "---\n" + webSlice)
	second, _, err := parseManifests(ms, cache)
	if err != nil {
		t.Fatal(err)
	}
	if second.EndpointSlices[0] != first.EndpointSlices[0] {
		t.Error("the unchanged slice was decoded again")
	}
	if second.Services[0] == first.Services[0] || second.Services[0].Spec.Ports[0].Port != 81 {
		t.Errorf("the changed service was not decoded again: %+v", second.Services[0].Spec.Ports)
	}
	// A cached document is still checked for duplicates.
	ms[0].data = []byte(webSlice + "---\n" + webSlice)
	if _, _, err := parseManifests(ms, cache); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("a duplicate of a cached document: %v", err)
	}
}
