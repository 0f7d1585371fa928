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
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/switchyard/switchyard/test/manifest"
)

// install applies the proxy's overlay through the API server and waits until its
// DaemonSet has a Ready pod on every node and each node's /healthz answers.
func (e *env) install(ctx context.Context) error {
	objs, err := e.objects()
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
	if e.p.ebpf {
		return e.checkSocketHooks()
	}
	return nil
}

// uninstall deletes what install applied, as kubectl delete -k does, and waits
// until the proxy's pods are gone (their rules and maps stay: removing them is a
// separate step, see cleanup).
func (e *env) uninstall(ctx context.Context) error {
	objs, err := e.objects()
	if err != nil {
		return err
	}
	a, err := manifest.NewApplier(e.c.RESTConfig())
	if err != nil {
		return err
	}
	if err := a.Delete(ctx, objs); err != nil {
		return err
	}
	return e.waitNoPods(ctx, "kube-system", "k8s-app="+e.p.app)
}

// objects are the proxy's overlay, built.
func (e *env) objects() ([]*unstructured.Unstructured, error) {
	dir, err := os.MkdirTemp("", "switchyard-e2e-overlay-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	files, err := e.p.overlay(dir, e.o.Repo)
	if err != nil {
		return nil, err
	}
	return buildFiles(dir, files)
}

// buildFiles writes a kustomization's files into dir and builds it.
func buildFiles(dir string, files map[string]string) ([]*unstructured.Unstructured, error) {
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	return manifest.Build(dir)
}

// waitNoPods waits until no pod matches the selector.
func (e *env) waitNoPods(ctx context.Context, namespace, selector string) error {
	var left int
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := e.cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		left = len(pods.Items)
		return left == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%d pods %s still there: %w", left, selector, err)
	}
	return nil
}

// waitAgents waits for a Running, Ready pod of the proxy on every node (unprivileged
// for Switchyard), then for each node's /healthz to answer 200: the proxy has
// programmed its node (kube-proxy's DaemonSet has no readiness probe).
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
	pods, err := e.cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=" + e.p.app})
	if err != nil {
		return err
	}
	ready := map[string]bool{}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			if sc := c.SecurityContext; !e.p.privileged && (sc == nil || sc.Privileged == nil || *sc.Privileged) {
				return fmt.Errorf("pod %s: container %s is privileged or does not say", p.Name, c.Name)
			}
		}
		if p.Status.Phase == corev1.PodRunning && podReady(&p) {
			ready[p.Spec.NodeName] = true
		}
	}
	for _, n := range e.c.Nodes() {
		if !ready[n.Name] {
			return fmt.Errorf("no Ready %s pod on %s (%d pods)", e.p.app, n.Name, len(pods.Items))
		}
		code, err := e.httpStatus(ctx, from{"node", n.Name}, e.p.healthz)
		if err != nil || code != 200 {
			return fmt.Errorf("node %s: %s answered %d (%v)", n.Name, e.p.healthz, code, err)
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

// agentLogs are the proxy containers' logs, read from each node's pod log directory
// (the API server cannot reach the kubelets, which live inside the nodes' namespaces).
func (e *env) agentLogs(context.Context) string {
	var b strings.Builder
	for _, n := range e.c.Nodes() {
		files, _ := filepath.Glob(filepath.Join(n.Dir, "pod-logs", "kube-system_"+e.p.app+"-*", e.p.app, "*.log"))
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
