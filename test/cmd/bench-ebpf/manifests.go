package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// manifests is the benchmark's cluster: n ClusterIP services (port 80/TCP) with
// one EndpointSlice each, and the Node. The YAML is written as text (not through
// sigs.k8s.io/yaml) because marshalling 20,000 objects would dominate the setup.
type manifests struct {
	dir      string
	services int
	// endpoints is the endpoint count per service; the changes move single
	// services away from it and back.
	endpoints int
	count     []int    // current endpoint count per service
	trigger   []string // per service, the slice's last-change-trigger-time ("" for none)
	docs      []string // node, then per service its Service and EndpointSlice
}

const (
	manifestFile = "objects.yaml"
	nodeName     = "node-a"
	nodeIP       = "192.168.0.2"
	namespace    = "bench"
)

func newManifests(dir string, services, endpoints int) (*manifests, error) {
	// Cluster IPs are 172.30.0.1 up; endpoint addresses are counted up from
	// 10.0.0.1 with room for one extra endpoint per service.
	if services < 1 || services > 65534 {
		return nil, fmt.Errorf("-services %d: want 1..65534 (cluster IPs come from 172.30.0.0/16)", services)
	}
	if endpoints < 1 || services*(endpoints+1) >= 1<<24 {
		return nil, fmt.Errorf("-endpoints %d: want >= 1 and services x (endpoints+1) < 2^24 (addresses come from 10.0.0.0/8)", endpoints)
	}
	m := &manifests{dir: dir, services: services, endpoints: endpoints,
		count: make([]int, services), trigger: make([]string, services), docs: make([]string, 1+2*services)}
	m.docs[0] = fmt.Sprintf(`apiVersion: v1
kind: Node
metadata:
  name: %[1]s
  labels:
    kubernetes.io/hostname: %[1]s
status:
  addresses:
  - type: InternalIP
    address: %[2]s
  - type: Hostname
    address: %[1]s
`, nodeName, nodeIP)
	for i := range services {
		m.count[i] = endpoints
		m.docs[1+2*i] = fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  type: ClusterIP
  clusterIP: %[3]s
  clusterIPs: [%[3]s]
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: 8080
`, svcName(i), namespace, ipString(clusterIP(i)))
		m.docs[2+2*i] = m.slice(i)
	}
	return m, m.write()
}

func svcName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// clusterIP of service i: 172.30.0.1 onwards.
func clusterIP(i int) [4]byte { n := i + 1; return [4]byte{172, 30, byte(n >> 8), byte(n)} }

func ipString(a [4]byte) string { return fmt.Sprintf("%d.%d.%d.%d", a[0], a[1], a[2], a[3]) }

// endpointIP j of service i, unique across services.
func (m *manifests) endpointIP(i, j int) string {
	n := i*(m.endpoints+1) + j + 1
	return fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255)
}

// slice is service i's EndpointSlice with its current endpoint count. The first
// endpoint runs on this node, the others elsewhere (no difference for ClusterIP
// traffic under the Cluster policy, but the model sees both kinds).
func (m *manifests) slice(i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[1]s-abcde
  namespace: %[2]s
  labels:
    kubernetes.io/service-name: %[1]s
    endpointslice.kubernetes.io/managed-by: bench-ebpf.switchyard.dev
`, svcName(i), namespace)
	if m.trigger[i] != "" {
		// The agent's kubeproxy_network_programming_duration_seconds counts from here.
		fmt.Fprintf(&b, "  annotations:\n    endpoints.kubernetes.io/last-change-trigger-time: %q\n", m.trigger[i])
	}
	b.WriteString("addressType: IPv4\nports:\n- name: http\n  protocol: TCP\n  port: 8080\nendpoints:\n")
	for j := range m.count[i] {
		node := "node-b"
		if j == 0 {
			node = nodeName
		}
		fmt.Fprintf(&b, "- addresses: [%s]\n  conditions: {ready: true}\n  nodeName: %s\n", m.endpointIP(i, j), node)
	}
	return b.String()
}

// setEndpoints changes service i's endpoint count and rewrites the file; it
// returns the time of the change (also the slice's trigger time).
func (m *manifests) setEndpoints(i, n int) (time.Time, error) {
	now := time.Now()
	m.count[i], m.trigger[i] = n, now.UTC().Format(time.RFC3339Nano)
	m.docs[2+2*i] = m.slice(i)
	return now, m.write()
}

// readAt is when the file was last read (its atime: with relatime, the first read
// after the write updates it). Zero if it cannot be told.
func (m *manifests) readAt() time.Time {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(m.dir, manifestFile), &st); err != nil {
		return time.Time{}
	}
	return time.Unix(st.Atim.Unix())
}

// write replaces the file atomically: the agent polls it every second and must
// never read half of it. The temporary name's extension is not one it reads.
func (m *manifests) write() error {
	tmp := filepath.Join(m.dir, ".objects.tmp")
	if err := os.WriteFile(tmp, []byte(strings.Join(m.docs, "---\n")), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(m.dir, manifestFile))
}
