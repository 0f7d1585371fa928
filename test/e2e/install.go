package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/switchyard/switchyard/test/cluster"
	"github.com/switchyard/switchyard/test/manifest"
)

// overlayFor is what an operator of this cluster writes over deploy/overlays/<mode>:
// the API server's address as the nodes reach it, the pod CIDR, and for eBPF the
// node's own cgroup v2 directory instead of the v2 root (the harness's nodes share
// the host's hierarchy; their cgroup is named after the node).
func overlayFor(dir, repo, mode string) (map[string]string, error) {
	// kustomize takes resources only by relative path.
	base, err := filepath.Rel(dir, filepath.Join(repo, "deploy", "overlays", mode))
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

func apiHost() string {
	h := strings.TrimPrefix(cluster.NodeAPIServer, "https://")
	return h[:strings.LastIndexByte(h, ':')]
}

func apiPort() string {
	return cluster.NodeAPIServer[strings.LastIndexByte(cluster.NodeAPIServer, ':')+1:]
}

// install applies the overlay through the API server and waits until the DaemonSet
// has a Ready pod on every node.
func (e *env) install(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "switchyard-e2e-overlay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	files, err := overlayFor(dir, e.o.Repo, e.o.Overlay)
	if err != nil {
		return err
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	objs, err := manifest.Build(dir)
	if err != nil {
		return err
	}
	a, err := manifest.NewApplier(e.c.RESTConfig())
	if err != nil {
		return err
	}
	if err := a.Apply(ctx, objs, false); err != nil {
		return err
	}
	if err := e.waitAgents(ctx); err != nil {
		return err
	}
	if e.o.Overlay == "ebpf" {
		return e.checkSocketHooks()
	}
	return nil
}

// waitAgents waits for a Running, Ready, unprivileged switchyard pod on every node.
func (e *env) waitAgents(ctx context.Context) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		last = e.agentsReady(ctx)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %v", err, last)
	}
	return nil
}

func (e *env) agentsReady(ctx context.Context) error {
	pods, err := e.cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=switchyard"})
	if err != nil {
		return err
	}
	ready := map[string]bool{}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			if sc := c.SecurityContext; sc == nil || sc.Privileged == nil || *sc.Privileged {
				return fmt.Errorf("pod %s: container %s is privileged or does not say", p.Name, c.Name)
			}
		}
		if p.Status.Phase == corev1.PodRunning && podReady(&p) {
			ready[p.Spec.NodeName] = true
		}
	}
	for _, n := range e.c.Nodes() {
		if !ready[n.Name] {
			return fmt.Errorf("no Ready switchyard pod on %s (%d pods)", n.Name, len(pods.Items))
		}
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// agentLogs are the agent containers' logs, read from each node's pod log directory
// (the API server cannot reach the kubelets, which live inside the nodes' namespaces).
func (e *env) agentLogs(context.Context) string {
	var b strings.Builder
	for _, n := range e.c.Nodes() {
		files, _ := filepath.Glob(filepath.Join(n.Dir, "pod-logs", "kube-system_switchyard-*", "switchyard", "*.log"))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				fmt.Fprintf(&b, "%s: %v\n", f, err)
				continue
			}
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			fmt.Fprintf(&b, "== %s (%s)\n%s\n", n.Name, f, strings.Join(lines, "\n"))
		}
	}
	return b.String()
}

func (e *env) withLogs(ctx context.Context, err error) error {
	return fmt.Errorf("%w\nagent logs:\n%s", err, e.agentLogs(ctx))
}
