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
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/switchyard/switchyard/test/cluster"
	"github.com/switchyard/switchyard/test/image"
	"github.com/switchyard/switchyard/test/manifest"
)

// cleanup applies deploy/cleanup/<app> with the images this cluster has, waits
// until its pod runs on every node (its init container finished), and deletes it.
// Switchyard's drains for drain, instead of the manifest's two minutes.
func (e *env) cleanup(drain time.Duration) func(context.Context) error {
	return func(ctx context.Context) error { return e.cleanupNow(ctx, drain) }
}

func (e *env) cleanupNow(ctx context.Context, drain time.Duration) error {
	dir, err := os.MkdirTemp("", "switchyard-e2e-cleanup-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	base, err := relBase(dir, filepath.Join(e.o.Repo, "deploy", "cleanup", e.p.app))
	if err != nil {
		return err
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
images:
%s%s`, base, imageOverride("registry.k8s.io/pause", image.Ref("pause")), imageOverride("registry.k8s.io/kube-proxy", image.Ref("kube-proxy")))
	if e.p.app == "switchyard" {
		k += fmt.Sprintf(`patches:
- target: {kind: DaemonSet, name: switchyard-cleanup}
  patch: |-
    - op: replace
      path: /spec/template/spec/initContainers/0/command/3
      value: --drain-timeout=%s
`, drain)
	}
	objs, err := buildFiles(dir, map[string]string{"kustomization.yaml": k})
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
	app := e.p.app + "-cleanup"
	if err := e.waitRunningEverywhere(ctx, app); err != nil {
		return fmt.Errorf("%s: %w", app, err)
	}
	if err := a.Delete(ctx, objs); err != nil {
		return err
	}
	return e.waitNoPods(ctx, "kube-system", "k8s-app="+app)
}

// imageOverride is a kustomize images entry naming ref instead of name.
func imageOverride(name, ref string) string {
	i := strings.LastIndexByte(ref, ':')
	return fmt.Sprintf("- name: %s\n  newName: %s\n  newTag: %s\n", name, ref[:i], ref[i+1:])
}

// waitRunningEverywhere waits for a Running pod labelled k8s-app=app on every node.
func (e *env) waitRunningEverywhere(ctx context.Context, app string) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := e.cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=" + app})
		if err != nil {
			return false, err
		}
		running := map[string]bool{}
		var states []string
		for _, p := range pods.Items {
			running[p.Spec.NodeName] = running[p.Spec.NodeName] || p.Status.Phase == corev1.PodRunning
			states = append(states, fmt.Sprintf("%s %s %s", p.Spec.NodeName, p.Status.Phase, initState(&p)))
		}
		last = strings.Join(states, "; ")
		for _, n := range e.c.Nodes() {
			if !running[n.Name] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("%w (%s)", err, last)
	}
	return nil
}

// initState says how the pod's init containers ended, if they failed.
func initState(p *corev1.Pod) string {
	var out []string
	for _, st := range p.Status.InitContainerStatuses {
		if t := st.LastTerminationState.Terminated; t != nil && t.ExitCode != 0 {
			out = append(out, fmt.Sprintf("%s exited %d: %s", st.Name, t.ExitCode, t.Message))
		}
		if t := st.State.Terminated; t != nil && t.ExitCode != 0 {
			out = append(out, fmt.Sprintf("%s exited %d: %s", st.Name, t.ExitCode, t.Message))
		}
	}
	return strings.Join(out, ", ")
}

// upgrade moves Switchyard's DaemonSet to a new tag of its image (the same content
// under another name, as a registry would serve a new release) and waits until the
// rolling update has replaced every pod and each is Ready.
func (e *env) upgrade(ctx context.Context) error {
	old := image.Ref("switchyard")
	next := old[:strings.LastIndexByte(old, ':')] + ":next"
	if err := e.c.TagImage(ctx, old, next); err != nil {
		return err
	}
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":%q,"image":%q}]}}}}`, e.p.app, next)
	if _, err := e.cs.AppsV1().DaemonSets("kube-system").Patch(ctx, e.p.app, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return err
	}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		ds, err := e.cs.AppsV1().DaemonSets("kube-system").Get(ctx, e.p.app, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		st := ds.Status
		last = fmt.Sprintf("generation %d/%d, updated %d available %d desired %d", st.ObservedGeneration, ds.Generation,
			st.UpdatedNumberScheduled, st.NumberAvailable, st.DesiredNumberScheduled)
		return st.ObservedGeneration >= ds.Generation && st.UpdatedNumberScheduled == st.DesiredNumberScheduled &&
			st.NumberAvailable == st.DesiredNumberScheduled && st.NumberUnavailable == 0, nil
	})
	if err != nil {
		return fmt.Errorf("rolling %s to %s: %w (%s)", e.p.app, next, err, last)
	}
	return e.waitAgents(ctx)
}

// waitKubeProxyRules waits until kube-proxy's rules on every node hold the steady
// Service's ClusterIP: kube-proxy has programmed its node (its /healthz on 10256
// cannot tell while Switchyard holds the port).
func (e *env) waitKubeProxyRules(ctx context.Context) error {
	s, err := e.cs.CoreV1().Services(ns).Get(ctx, "steady", metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, n := range e.c.Nodes() {
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			out, err := cluster.Output(e.c.NodeCommand(ctx, n.Name, "nft", "list", "ruleset"))
			return err == nil && kubeProxyHas(out, s.Spec.ClusterIP), nil
		})
		if err != nil {
			return fmt.Errorf("node %s: no kube-proxy rule for %s: %w", n.Name, s.Spec.ClusterIP, err)
		}
	}
	return nil
}

// kubeProxyHas says whether an nft ruleset has a kube-proxy rule for ip: a line
// naming it and a kube-proxy service chain (nftables mode's service-*, iptables-nft's
// KUBE-SVC-*).
func kubeProxyHas(ruleset, ip string) bool {
	for _, line := range strings.Split(ruleset, "\n") {
		if strings.Contains(line, ip+" ") && (strings.Contains(line, "service-") || strings.Contains(line, "KUBE-SVC-")) {
			return true
		}
	}
	return false
}
