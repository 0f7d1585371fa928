package e2e

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/switchyard/switchyard/test/cluster"
)

// proxy is what run installs: Switchyard from an overlay of deploy/overlays, or
// upstream kube-proxy as kubeadm deploys it (testdata/kube-proxy).
type proxy struct {
	name       string // the Options.Proxy value
	app        string // the DaemonSet's k8s-app label and name
	privileged bool   // kube-proxy's DaemonSet is; Switchyard's must not be
	// healthz is the URL, on the node, that answers 200 once this proxy has
	// programmed the node: Switchyard's own status address, which kube-proxy does
	// not share (both answer on 10256, whichever holds it).
	healthz string
	ebpf    bool
	// overlay is the kustomization an operator of this cluster writes over the
	// base, relative to the overlay's directory dir, and its other files.
	overlay func(dir, repo string) (map[string]string, error)
}

const (
	switchyardStatus = "http://127.0.0.1:10266/healthz"
	kubeProxyHealthz = "http://127.0.0.1:10256/healthz"
)

// Proxies lists what Options.Proxy takes.
func Proxies() []string {
	var out []string
	for _, p := range proxies {
		out = append(out, p.name)
	}
	return out
}

var proxies = []proxy{
	{name: "ebpf", app: "switchyard", healthz: switchyardStatus, ebpf: true, overlay: switchyardOverlay("ebpf")},
	{name: "iptables", app: "switchyard", healthz: switchyardStatus, overlay: switchyardOverlay("iptables")},
	{name: "kube-proxy-nftables", app: "kube-proxy", healthz: kubeProxyHealthz, privileged: true, overlay: kubeProxyOverlay("nftables")},
	{name: "kube-proxy-iptables", app: "kube-proxy", healthz: kubeProxyHealthz, privileged: true, overlay: kubeProxyOverlay("iptables")},
}

func proxyNamed(name string) (proxy, error) {
	for _, p := range proxies {
		if p.name == name {
			return p, nil
		}
	}
	return proxy{}, fmt.Errorf("no proxy %q; want one of %s", name, strings.Join(Proxies(), ", "))
}

// relBase is the base directory as kustomize takes it: by relative path only.
func relBase(dir, base string) (string, error) {
	return filepath.Rel(dir, base)
}

// switchyardOverlay sets, over deploy/overlays/<mode>, the API server's address
// as the nodes reach it, the pod CIDR, and for eBPF the node's own cgroup v2
// directory instead of the v2 root (the harness's nodes share the host's
// hierarchy; their cgroup is named after the node).
func switchyardOverlay(mode string) func(dir, repo string) (map[string]string, error) {
	return func(dir, repo string) (map[string]string, error) {
		base, err := relBase(dir, filepath.Join(repo, "deploy", "overlays", mode))
		if err != nil {
			return nil, err
		}
		k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
configMapGenerator:
- name: switchyard-apiserver
  namespace: kube-system
  behavior: replace
  literals:
  - KUBERNETES_SERVICE_HOST=%s
  - KUBERNETES_SERVICE_PORT=%s
- name: switchyard-config
  namespace: kube-system
  behavior: replace
  files: [config.conf]
`, base, apiHost(), apiPort())
		if mode == "ebpf" {
			k += `patches:
- target: {kind: DaemonSet, name: switchyard}
  patch: |-
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --cgroup-root=/sys/fs/cgroup/unified/$(NODE_NAME)
`
		}
		conf := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clusterCIDR: %s
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
`, cluster.ClusterCIDR)
		return map[string]string{"kustomization.yaml": k, "config.conf": conf}, nil
	}
}

// kubeProxyOverlay sets, over testdata/kube-proxy, the mode, the pod CIDR and the
// API server's address in kube-proxy's ConfigMap, as kubeadm writes them.
func kubeProxyOverlay(mode string) func(dir, repo string) (map[string]string, error) {
	return func(dir, repo string) (map[string]string, error) {
		base, err := relBase(dir, filepath.Join(repo, "test", "e2e", "testdata", "kube-proxy"))
		if err != nil {
			return nil, err
		}
		k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
configMapGenerator:
- name: kube-proxy
  namespace: kube-system
  behavior: replace
  options: {disableNameSuffixHash: true, labels: {app: kube-proxy}}
  files: [config.conf, kubeconfig.conf]
`, base)
		conf := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
mode: %s
clusterCIDR: %s
conntrack:
  maxPerCore: 0
`, mode, cluster.ClusterCIDR)
		kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
    server: %s
  name: default
contexts:
- context: {cluster: default, namespace: default, user: default}
  name: default
current-context: default
users:
- name: default
  user:
    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
`, cluster.NodeAPIServer)
		return map[string]string{"kustomization.yaml": k, "config.conf": conf, "kubeconfig.conf": kubeconfig}, nil
	}
}

func apiHost() string {
	h := strings.TrimPrefix(cluster.NodeAPIServer, "https://")
	return h[:strings.LastIndexByte(h, ':')]
}

func apiPort() string {
	return cluster.NodeAPIServer[strings.LastIndexByte(cluster.NodeAPIServer, ':')+1:]
}
