package watcher

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	list := `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: db, namespace: data}
  spec: {clusterIP: 10.96.0.20, type: NodePort, ports: [{port: 5432, protocol: UDP, nodePort: 30000}]}
`
	writeFile(t, dir, "a.yaml", "# nothing here\n---\n"+webService+"---\n---\n"+webSlice)
	writeFile(t, dir, "b.yml", list)
	writeFile(t, dir, "c.json", `{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}`)
	objs, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Services) != 2 || len(objs.EndpointSlices) != 1 || len(objs.Nodes) != 1 {
		t.Fatalf("Load: %d services, %d slices, %d nodes; want 2, 1, 1",
			len(objs.Services), len(objs.EndpointSlices), len(objs.Nodes))
	}
	db := objs.Services[1]
	if db.Namespace != "data" || db.Spec.Type != "NodePort" || db.Spec.Ports[0].Protocol != "UDP" {
		t.Errorf("explicit fields overwritten by defaults: %s/%s %+v", db.Namespace, db.Name, db.Spec)
	}
	if objs.EndpointSlices[0].Namespace != "default" {
		t.Errorf("slice namespace = %q, want default", objs.EndpointSlices[0].Namespace)
	}
}

// A separator line may carry a comment (kubectl accepts it); no document after it may be lost.
func TestLoadSeparatorWithComment(t *testing.T) {
	node := "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n"
	dir := t.TempDir()
	writeFile(t, dir, "m.yaml", "--- # the service\n"+webService+"--- # its slice\n"+webSlice+"---\t# the node\n"+node)
	objs, err := Load(filepath.Join(dir, "m.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Services) != 1 || len(objs.EndpointSlices) != 1 || len(objs.Nodes) != 1 {
		t.Errorf("Load: %d services, %d slices, %d nodes; want 1 of each",
			len(objs.Services), len(objs.EndpointSlices), len(objs.Nodes))
	}
}

func TestLoadErrors(t *testing.T) {
	svc := func(repl ...string) string { return strings.NewReplacer(repl...).Replace(webService) }
	tests := []struct {
		name, content, want string
	}{
		{"unknown kind", webService + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
			`document 2 (Pod p): unsupported object apiVersion "v1" kind "Pod"`},
		{"wrong apiVersion", svc("apiVersion: v1", "apiVersion: v2"), `document 1 (Service web): unsupported`},
		{"unknown field", svc("ports:", "prots:"), `document 1 (Service default/web): unknown field "spec.prots"`},
		{"field case", svc("clusterIP:", "clusterIp:"), `document 1 (Service default/web): unknown field "spec.clusterIp"`},
		{"missing name", svc("name: web", "labels: {}"), "document 1 (Service): metadata.name is required"},
		{"bad yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [web\n", "document 1: yaml: "},
		{"duplicate key", svc("kind: Service", "kind: Service\nkind: Service"), "document 1: "},
		{"no addressType", strings.Replace(webSlice, "addressType: IPv4\n", "", 1),
			"document 1 (EndpointSlice default/web-1): addressType is required"},
		{"list item", "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Node, metadata: {name: n1}, spek: {}}\n",
			`document 1 item 1 (Node n1): unknown field "spek"`},
		{"duplicate object", webService + "---\n" + webService, "document 2 (Service default/web): duplicate of "},
		{"not an object", "just a string\n", "document 1: "},
		{"separator with content", webService + "--- kind: Service\n", "document 1: invalid Yaml document separator: kind: Service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.yaml")
			writeFile(t, filepath.Dir(path), "m.yaml", tt.content)
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), path+": "+tt.want) {
				t.Errorf("Load error = %v\nwant it to contain %q", err, path+": "+tt.want)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(missing) error = %v, want it to name %s", err, path)
	}
}
