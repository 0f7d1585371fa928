package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/test/cluster"
	"github.com/switchyard/switchyard/test/topology"
)

// setup is what TestMain prepared: the image archives and the host-side probe, or why it could not.
var setup struct {
	images []string
	probe  string
	err    error
}

func TestMain(m *testing.M) {
	var dir string
	if cluster.Prerequisites("") == nil {
		if removed, err := cluster.Down("", false, ""); err != nil || len(removed) > 0 {
			fmt.Fprintf(os.Stderr, "cluster: removed leftovers of killed runs %v (error: %v)\n", removed, err)
		}
		dir, setup.err = os.MkdirTemp("", "cluster-test-")
		if setup.err == nil {
			setup.err = prepare(dir)
		}
	}
	cluster.CloseOnSignal()
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// prepare builds the pause and test images (test/cmd/image) and the probe run from the namespaces.
func prepare(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "github.com/switchyard/switchyard/test/cmd/image", "-q",
		"-o", dir, "pause", "test")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the images: %w: %s", err, out)
	}
	setup.images = []string{filepath.Join(dir, "pause-image.tar"), filepath.Join(dir, "test-image.tar")}
	var err error
	_, setup.probe, err = topology.BuildBinaries(ctx, dir)
	return err
}

func start(t *testing.T, nodes int) *cluster.Cluster {
	t.Helper()
	cluster.Require(t)
	if setup.err != nil {
		t.Fatal(setup.err)
	}
	return cluster.StartForTest(t, cluster.Options{Nodes: nodes, Images: setup.images})
}

func TestOneNode(t *testing.T) {
	testCluster(t, 1)
}

func TestTwoNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	testCluster(t, 2)
}

// testCluster starts a cluster, runs a Deployment of two echo pods behind a Service, a client pod and
// a hostNetwork DaemonSet on it, checks that every pair that should talk does, that every process
// of each node lives in the node's cgroup v2 tree, and that Close leaves nothing behind.
func testCluster(t *testing.T, nodes int) {
	t0 := time.Now()
	linksBefore := rootLinks(t)
	shimsBefore := shimSockets()
	c := start(t, nodes)
	tm := c.Timings()
	t.Logf("cluster %s: infra %v, kubelets started %v, nodes Ready %v, ready %v", c.Prefix(),
		tm.Infra.Round(time.Millisecond), tm.NodesStarted.Round(time.Millisecond),
		tm.NodesReady.Round(time.Millisecond), tm.Total.Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cs := c.Client()
	const ns = "default"

	podsStart := time.Now()
	createEcho(ctx, t, cs, ns, nodes)
	pods := waitPods(ctx, t, cs, ns, "app=echo", 2, true)
	t.Logf("2 echo pods Ready %v after creating the Deployment", time.Since(podsStart).Round(time.Millisecond))
	var podIPs []string
	for _, p := range pods {
		podIPs = append(podIPs, p.Status.PodIP)
	}
	sort.Strings(podIPs)
	if nodes > 1 && pods[0].Spec.NodeName == pods[1].Spec.NodeName {
		t.Errorf("both echo pods on %s: the spread constraint should put one on each node", pods[0].Spec.NodeName)
	}
	waitSlice(ctx, t, cs, ns, "echo", podIPs)

	// Every process of every node (daemons, shims, containers) is in that node's cgroup v2 tree.
	for _, n := range c.Nodes() {
		checkNodeCgroups(t, n)
	}
	for _, p := range pods {
		pid, err := c.PodPID(ctx, ns, p.Name)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := c.Node(p.Spec.NodeName)
		cg := cgroupV2(t, pid)
		if !strings.HasPrefix(cg, n.CgroupRoot+"/kubepods/") {
			t.Errorf("pod %s (pid %d): cgroup v2 %s, want below %s/kubepods/", p.Name, pid, cg, n.CgroupRoot)
		}
	}

	// From each node's namespaces to every pod (the other node's pods through the node routes).
	for _, n := range c.Nodes() {
		for _, ip := range podIPs {
			expectEcho(t, c.NodeCommand(ctx, n.Name, setup.probe, "-proto", "tcp", "-dst", ip+":8080"), ip+":8080")
		}
	}

	// From a second pod (the client's netns, entered from its container's pid) to every echo pod.
	createPod(ctx, t, cs, ns, "client", []string{"-tcp", "8081"})
	waitPods(ctx, t, cs, ns, "app=client", 1, false)
	for _, ip := range podIPs {
		cmd, err := c.PodCommand(ctx, ns, "client", setup.probe, "-proto", "tcp", "-dst", ip+":8080")
		if err != nil {
			t.Fatal(err)
		}
		expectEcho(t, cmd, ip+":8080")
	}

	// A hostNetwork DaemonSet pod (not privileged) runs on every node, in the node's namespace:
	// external clients reach it on the node IP.
	dsStart := time.Now()
	createHostNetDaemonSet(ctx, t, cs, ns)
	waitPods(ctx, t, cs, ns, "app=hostnet", nodes, true)
	t.Logf("hostNetwork DaemonSet Ready on %d node(s) %v after its creation", nodes, time.Since(dsStart).Round(time.Millisecond))
	for _, e := range c.ExternalClients() {
		for _, n := range c.Nodes() {
			expectEcho(t, c.ExternalCommand(ctx, e.IP, setup.probe, "-proto", "tcp", "-dst", n.IP+":9099"), n.IP+":9099")
		}
	}

	// Nothing appeared in the root namespace.
	if after := rootLinks(t); !slices.Equal(linksBefore, after) {
		t.Errorf("links of the root namespace changed: before %v, after %v", linksBefore, after)
	}

	closeStart := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %v", time.Since(closeStart).Round(time.Millisecond))
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("left behind after Close:\n%s", strings.Join(left, "\n"))
	}
	if after := shimSockets(); !slices.Equal(shimsBefore, after) {
		t.Errorf("/run/containerd/s changed: before %v, after %v", shimsBefore, after)
	}
	t.Logf("whole test %v", time.Since(t0).Round(time.Millisecond))
}

func createEcho(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, nodes int) {
	t.Helper()
	labels := map[string]string{"app": "echo"}
	spec := podSpec([]string{"-tcp", "8080"})
	spec.Containers[0].Ports = []v1.ContainerPort{{Name: "echo", ContainerPort: 8080}}
	spec.Containers[0].ReadinessProbe = &v1.Probe{
		ProbeHandler:  v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
		PeriodSeconds: 1,
	}
	if nodes > 1 {
		spec.TopologySpreadConstraints = []v1.TopologySpreadConstraint{{
			MaxSkew: 1, TopologyKey: v1.LabelHostname, WhenUnsatisfiable: v1.DoNotSchedule,
			LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
		}}
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: v1.ServiceSpec{Selector: labels, Ports: []v1.ServicePort{{
			Name: "echo", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("echo"),
		}}},
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func podSpec(args []string) v1.PodSpec {
	return v1.PodSpec{
		Containers: []v1.Container{{
			Name: "main", Image: "localhost/switchyard-test:dev", ImagePullPolicy: v1.PullNever, Args: args,
		}},
		TerminationGracePeriodSeconds: ptr.To[int64](1),
		EnableServiceLinks:            ptr.To(false),
	}
}

func createPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string, args []string) {
	t.Helper()
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}}, Spec: podSpec(args)}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createHostNetDaemonSet(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	labels := map[string]string{"app": "hostnet"}
	spec := podSpec([]string{"-tcp", "9099"})
	spec.Containers[0].ReadinessProbe = &v1.Probe{
		ProbeHandler:  v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromInt32(9099)}},
		PeriodSeconds: 1,
	}
	spec.HostNetwork = true
	spec.Tolerations = []v1.Toleration{{Operator: v1.TolerationOpExists}}
	spec.Containers[0].SecurityContext = &v1.SecurityContext{Privileged: ptr.To(false)}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "hostnet"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitPods waits until n pods match the selector and are Running (and Ready, with ready).
func waitPods(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, selector string, n int, ready bool) []v1.Pod {
	t.Helper()
	var last string
	for {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil {
			var ok []v1.Pod
			var states []string
			for _, p := range list.Items {
				states = append(states, fmt.Sprintf("%s on %q: %s ready=%v", p.Name, p.Spec.NodeName, p.Status.Phase, podReady(p)))
				if p.Status.Phase == v1.PodRunning && (!ready || podReady(p)) {
					ok = append(ok, p)
				}
			}
			if len(ok) == n && len(list.Items) == n {
				return ok
			}
			last = strings.Join(states, "; ")
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pods %s: %v; last: %s", selector, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func podReady(p v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// waitSlice waits until the EndpointSlice controller wrote the service's slice with exactly the
// pod IPs, all ready.
func waitSlice(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, svc string, ips []string) {
	t.Helper()
	var last string
	for {
		list, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
			LabelSelector: discovery.LabelServiceName + "=" + svc})
		if err == nil {
			var got []string
			for _, s := range list.Items {
				if s.Labels[discovery.LabelManagedBy] != "endpointslice-controller.k8s.io" {
					continue
				}
				for _, e := range s.Endpoints {
					if e.Conditions.Ready != nil && *e.Conditions.Ready {
						got = append(got, e.Addresses...)
					}
				}
			}
			sort.Strings(got)
			if slices.Equal(got, ips) {
				return
			}
			last = fmt.Sprintf("ready endpoints %v, want %v", got, ips)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("EndpointSlice of %s: %v; last: %s", svc, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// expectEcho runs a probe command and checks that one connection reached the echo server at want.
func expectEcho(t *testing.T, cmd *exec.Cmd, want string) {
	t.Helper()
	out, err := cluster.Output(cmd)
	if err != nil {
		t.Error(err)
		return
	}
	var r topology.ProbeResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
		t.Errorf("%s: %q: %v", strings.Join(cmd.Args, " "), out, err)
		return
	}
	if r.Result != "ok" || r.Endpoint != want {
		t.Errorf("%s: %+v, want ok from %s", strings.Join(cmd.Args, " "), r, want)
	}
}

// checkNodeCgroups checks that every process of the node (those naming its state directory on their
// command line: containerd, the shims, kubelet) and everything in its v2 tree is below the node's
// cgroup v2 directory.
func checkNodeCgroups(t *testing.T, n cluster.Node) {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), n.Dir+"/") {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		seen = append(seen, strings.TrimSpace(string(comm)))
		cg, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err != nil {
			continue
		}
		v2 := v2Line(string(cg))
		if v2 != n.CgroupRoot && !strings.HasPrefix(v2, n.CgroupRoot+"/") {
			t.Errorf("%s: process %s (%s) is in cgroup v2 %q, not below %s", n.Name, e.Name(), comm, v2, n.CgroupRoot)
		}
	}
	sort.Strings(seen)
	for _, want := range []string{"containerd", "containerd-shim", "kubelet"} {
		if !slices.Contains(seen, want) {
			t.Errorf("%s: no %s process found (saw %v)", n.Name, want, seen)
		}
	}
}

func cgroupV2(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	return v2Line(string(b))
}

func v2Line(procCgroup string) string {
	for _, line := range strings.Split(procCgroup, "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return ""
}

// rootLinks lists the link names of the test's (root) network namespace.
func rootLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-j", "link").Output()
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Name)
	}
	sort.Strings(names)
	return names
}

// shimSockets lists the host's /run/containerd/s (where containerd 1.6 shims put their sockets; the
// nodes have a private /run, so none of theirs may appear here).
func shimSockets() []string {
	ents, _ := os.ReadDir("/run/containerd/s")
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestFailedStartLeavesNothing: an image archive containerd refuses fails Start after the topology,
// the control plane, the controllers, the holder and containerd are up; Start must remove all of it.
func TestFailedStartLeavesNothing(t *testing.T) {
	cluster.Require(t)
	bad := filepath.Join(t.TempDir(), "bad-image.tar")
	if err := os.WriteFile(bad, []byte("not a tar archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	prefix, err := topology.NewPrefix()
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Start(t.Context(), cluster.Options{Prefix: prefix, Images: []string{bad}, Logf: t.Logf})
	if err == nil {
		c.Close()
		t.Fatal("Start succeeded with a broken image archive")
	}
	t.Logf("Start failed as it should: %.300s", err)
	if !strings.Contains(err.Error(), "importing "+bad) {
		t.Errorf("the error does not name the import of %s", bad)
	}
	if left := cluster.Leftovers("", prefix); len(left) > 0 {
		t.Errorf("left behind after the failed Start:\n%s", strings.Join(left, "\n"))
	}
}
