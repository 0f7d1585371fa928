// Package deploy holds the manifests (kustomize base and overlays); its test builds
// every overlay and has a real kube-apiserver admit it (server-side apply, dry run).
package deploy

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/switchyard/switchyard/test/controlplane"
	"github.com/switchyard/switchyard/test/manifest"
)

// overlayCaps are the capabilities each mode's container gets, and nothing else.
var overlayCaps = map[string][]corev1.Capability{
	"ebpf":     {"NET_ADMIN", "BPF", "PERFMON"},
	"iptables": {"NET_ADMIN", "NET_RAW"},
	"ipvs":     {"NET_ADMIN", "NET_RAW"},
}

func TestEveryOverlayIsAdmitted(t *testing.T) {
	overlays, err := filepath.Glob("overlays/*")
	if err != nil || len(overlays) == 0 {
		t.Fatalf("no overlays: %v", err)
	}
	cp := controlplane.StartForTest(t, controlplane.Options{})
	a, err := manifest.NewApplier(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range overlays {
		mode := filepath.Base(dir)
		t.Run(mode, func(t *testing.T) {
			objs, err := manifest.Build(dir)
			if err != nil {
				t.Fatal(err)
			}
			ds := daemonSet(t, objs)
			checkLeastPrivilege(t, ds, overlayCaps[mode])
			if args := ds.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--mode="+mode) {
				t.Errorf("args %v lack --mode=%s", args, mode)
			}
			if err := a.Apply(t.Context(), objs, true); err != nil {
				t.Errorf("the API server refused the %s overlay: %v", mode, err)
			}
		})
	}
}

// The cleanup DaemonSets of a handover and a rollback (docs/migrate.md) are admitted
// too (kube-proxy's is privileged, as kube-proxy is: the cluster must allow it);
// Switchyard's is not privileged.
func TestCleanupIsAdmitted(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Options{ExtraAPIServerArgs: []string{"--allow-privileged=true"}})
	a, err := manifest.NewApplier(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"cleanup/switchyard", "cleanup/kube-proxy"} {
		objs, err := manifest.Build(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Apply(t.Context(), objs, true); err != nil {
			t.Errorf("the API server refused %s: %v", dir, err)
		}
		if dir == "cleanup/switchyard" {
			ds := daemonSet(t, objs)
			if sc := ds.Spec.Template.Spec.InitContainers[0].SecurityContext; sc == nil || sc.Privileged == nil || *sc.Privileged {
				t.Errorf("%s: the cleanup container is privileged or does not say", dir)
			}
		}
	}
}

// TestBidirectionalNeedsPrivileged shows why the bpffs mount is HostToContainer: the
// API server admits Bidirectional propagation only in a privileged container.
func TestBidirectionalNeedsPrivileged(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Options{})
	a, err := manifest.NewApplier(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	objs, err := manifest.Build("overlays/ebpf")
	if err != nil {
		t.Fatal(err)
	}
	ds := daemonSet(t, objs)
	bidi := corev1.MountPropagationBidirectional
	for i, m := range ds.Spec.Template.Spec.Containers[0].VolumeMounts {
		if m.MountPath == "/sys/fs/bpf" {
			ds.Spec.Template.Spec.Containers[0].VolumeMounts[i].MountPropagation = &bidi
		}
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ds)
	if err != nil {
		t.Fatal(err)
	}
	err = a.Apply(t.Context(), []*unstructured.Unstructured{{Object: u}}, true)
	if err == nil || !strings.Contains(err.Error(), "privileged") {
		t.Fatalf("a Bidirectional bpffs mount without privileged: want a refusal naming privileged containers, got %v", err)
	}
}

func daemonSet(t *testing.T, objs []*unstructured.Unstructured) *appsv1.DaemonSet {
	t.Helper()
	var found []*appsv1.DaemonSet
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		ds := &appsv1.DaemonSet{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, ds); err != nil {
			t.Fatal(err)
		}
		found = append(found, ds)
	}
	if len(found) != 1 || len(found[0].Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one DaemonSet with one container, got %d DaemonSets", len(found))
	}
	return found[0]
}

func checkLeastPrivilege(t *testing.T, ds *appsv1.DaemonSet, caps []corev1.Capability) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.PriorityClassName != "system-node-critical" {
		t.Errorf("want hostNetwork and system-node-critical, got %v and %q", spec.HostNetwork, spec.PriorityClassName)
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil {
		t.Fatalf("want privileged: false and explicit capabilities, got %+v", sc)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, caps) {
		t.Errorf("capabilities: want drop [ALL] add %v, got drop %v add %v", caps, sc.Capabilities.Drop, sc.Capabilities.Add)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/livez" ||
		c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("want liveness on /livez and readiness on /healthz, got %+v and %+v", c.LivenessProbe, c.ReadinessProbe)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("want CPU and memory requests, got %v", c.Resources.Requests)
	}
}
