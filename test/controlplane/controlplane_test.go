package controlplane_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/test/controlplane"
)

func TestControlPlane(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Options{})
	ctx := t.Context()
	cs := cp.Client()

	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != controlplane.Version {
		t.Errorf("/version: gitVersion %q, want %q", v.GitVersion, controlplane.Version)
	}

	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cp-test"}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "cp-test"},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeNodePort,
			Ports: []v1.ServicePort{{
				Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30080,
			}},
		},
	}
	if _, err := cs.CoreV1().Services("cp-test").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	slice := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "cp-test", Labels: map[string]string{
			discovery.LabelServiceName: "web", discovery.LabelManagedBy: "switchyard-test",
		}},
		AddressType: discovery.AddressTypeIPv4,
		Endpoints: []discovery.Endpoint{{
			Addresses: []string{"10.0.0.1"}, Conditions: discovery.EndpointConditions{Ready: ptr.To(true)},
		}},
		Ports: []discovery.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](8080)}},
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("cp-test").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Read back, through a client built from the kubeconfig file (which checks the
	// serving certificate against the CA it carries).
	rc, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cs2, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	gotSvc, err := cs2.CoreV1().Services("cp-test").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(gotSvc.Spec.ClusterIP)
	if err != nil || !netip.MustParsePrefix("172.30.0.0/16").Contains(ip) {
		t.Errorf("clusterIP %q not allocated from the default service CIDR", gotSvc.Spec.ClusterIP)
	}
	if p := gotSvc.Spec.Ports[0]; p.Port != 80 || p.NodePort != 30080 {
		t.Errorf("service ports read back as %+v", gotSvc.Spec.Ports)
	}
	gotSlice, err := cs2.DiscoveryV1().EndpointSlices("cp-test").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(gotSlice.Endpoints) != 1 || gotSlice.Endpoints[0].Addresses[0] != "10.0.0.1" ||
		gotSlice.Labels[discovery.LabelServiceName] != "web" {
		t.Errorf("slice read back as %+v", gotSlice)
	}
	// No EndpointSlice controller runs: ours is the only slice.
	list, err := cs2.DiscoveryV1().EndpointSlices("cp-test").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Errorf("%d slices in cp-test, want 1", len(list.Items))
	}
}

// TestStop checks that Stop ends both servers and removes the temporary work
// directory.
func TestStop(t *testing.T) {
	bin := controlplane.Require(t)
	cp, err := controlplane.Start(t.Context(), controlplane.Options{BinDir: bin})
	if err != nil {
		t.Fatal(err)
	}
	dir, addr := cp.Dir(), strings.TrimPrefix(cp.URL(), "https://")
	start := time.Now()
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
	if err := cp.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("work directory %s still there (%v)", dir, err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", addr)
	}
}

// TestStartFailure checks that a failing API server is reported with its log and
// leaves nothing behind.
func TestStartFailure(t *testing.T) {
	bin := controlplane.Require(t)
	dir := filepath.Join(t.TempDir(), "cp")
	_, err := controlplane.Start(t.Context(), controlplane.Options{
		BinDir: bin, Dir: dir, ExtraAPIServerArgs: []string{"--no-such-flag"},
	})
	if err == nil {
		t.Fatal("Start succeeded with a bad flag")
	}
	t.Logf("Start: %v", err)
	if !strings.Contains(err.Error(), "no-such-flag") {
		t.Errorf("error does not show the API server's log: %v", err)
	}
}

func TestBridgeIntoNetns(t *testing.T) {
	for _, tool := range []string{"ip", "nsenter", "socat", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, tool+" not installed (test/prereqs.sh installs it)")
		}
	}
	if os.Geteuid() != 0 {
		skipOrFail(t, "creating network namespaces needs root")
	}
	cp := controlplane.StartForTest(t, controlplane.Options{})
	ns := newNetns(t)
	const port = 6443
	stop, err := cp.BridgeIntoNetns(ns, port)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://127.0.0.1:6443/readyz"
	auth := "Authorization: Bearer " + cp.Token()
	if out, err := curlIn(ns, "-sk", "-H", auth, url); err != nil || out != "ok" {
		t.Fatalf("readyz through the bridge: %q, %v", out, err)
	}
	// The serving certificate is valid for 127.0.0.1 under the CA the kubeconfigs carry.
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, cp.CAData(), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := curlIn(ns, "-s", "--cacert", ca, "-H", auth, url); err != nil || out != "ok" {
		t.Errorf("readyz through the bridge, verifying the certificate: %q, %v", out, err)
	}
	kc, err := cp.KubeconfigFor("https://127.0.0.1:6443")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(kc); err != nil || !bytes.Contains(b, []byte("server: https://127.0.0.1:6443")) {
		t.Errorf("KubeconfigFor wrote %q (%v)", b, err)
	}
	// Several requests at once (socat forks per connection).
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			out, err := curlIn(ns, "-sk", "-H", auth, "https://127.0.0.1:6443/version")
			if err == nil && !strings.Contains(out, controlplane.Version) {
				err = &unexpected{out}
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("/version through the bridge: %v", err)
		}
	}

	// A long-lived connection (a watch) holds a forked socat on each side; stopping
	// the bridge must end those too, and they must be reaped, not left to PID 1.
	watch := exec.Command("nsenter", "--net="+ns, "curl", "--noproxy", "*", "-skN", "-H", auth,
		"https://127.0.0.1:6443/api/v1/namespaces?watch=1")
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
	var socats []int
	waitUntil(t, "the watch's socat children", func() bool {
		socats = socatsMentioning(cp.Dir())
		return len(socats) >= 4 // two listeners, two per-connection children
	})

	if err := stop(); err != nil {
		t.Fatalf("stopping the bridge: %v", err)
	}
	// stop waits for that: nothing may be left when it returns.
	for _, pid := range socats {
		if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat")); err == nil {
			t.Errorf("socat of the bridge left after stop: %s", b)
		}
	}
	if out, err := curlIn(ns, "-sk", "--max-time", "5", url); err == nil {
		t.Errorf("bridge still answers after stop: %q", out)
	}
	if err := stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	// A second bridge left open is ended by the control plane's Stop (in Cleanup).
	if _, err := cp.BridgeIntoNetns(ns, 6444); err != nil {
		t.Fatal(err)
	}
}

// socatsMentioning lists the socat processes whose command line contains s.
func socatsMentioning(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if strings.TrimSpace(string(comm)) != "socat" {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, pid)
		}
	}
	return out
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("timed out waiting for " + what)
		}
	}
}

type unexpected struct{ out string }

func (u *unexpected) Error() string { return "unexpected answer: " + u.out }

// curlIn runs curl inside the network namespace at ns and returns its output.
func curlIn(ns string, args ...string) (string, error) {
	args = append([]string{"--net=" + ns, "curl", "--noproxy", "*"}, args...)
	out, err := exec.Command("nsenter", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// newNetns creates a network namespace with only lo (up), named with a per-run
// prefix, deleted when the test ends. It returns its path.
func newNetns(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "sy-cp-" + hex.EncodeToString(b) + "-bridge"
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v: %s", name, err, out)
	}
	return "/run/netns/" + name
}

func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
