package topology

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func smallScenario() Scenario {
	return Scenario{
		Node:     Node{IPs: []string{"192.168.0.2"}},
		Pods:     []Pod{{Name: "p", IP: "10.0.1.1", Local: true, Ports: testPorts}},
		External: []Client{{IP: "203.0.113.10"}},
	}
}

// TestServersInNodeCgroup: pod servers, and commands run in the node, are in their node's cgroup and
// in their own network namespace.
func TestServersInNodeCgroup(t *testing.T) {
	topo := build(t, standardScenario(0))
	want := map[string]string{"a1": topo.NodeCgroup(), "a2": topo.NodeCgroup(), "b1": topo.RemoteCgroup()}
	for podName, cg := range want {
		pids := topo.ServerPIDs(podName)
		if len(pids) != 1 {
			t.Fatalf("pod %s: server pids %v", podName, pids)
		}
		if got := procCgroup(t, pids[0]); got != cg {
			t.Errorf("pod %s server %d is in cgroup %s, want %s", podName, pids[0], got, cg)
		}
		if !contains(cgroupProcs(t, cg), pids[0]) {
			t.Errorf("pod %s server %d missing from %s/cgroup.procs", podName, pids[0], cg)
		}
		nsIno, err := netnsInode(NetnsPath(topo.PodNS(podName)))
		if err != nil {
			t.Fatal(err)
		}
		if pidIno, err := netnsInode(filepathProcNS(pids[0])); err != nil || pidIno != nsIno {
			t.Errorf("pod %s server is not in the pod's namespace (%d vs %d, %v)", podName, pidIno, nsIno, err)
		}
	}
	out, err := topo.Run(context.Background(), topo.NodeNS(), "cat", "/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	rel := "0::/" + filepath.Base(topo.NodeCgroup())
	if !strings.Contains(out, rel+"\n") {
		t.Errorf("a command run in the node is in cgroups %q, want %s", out, rel)
	}
}

// TestCloseRemovesEverything: no namespace, cgroup, owner file or process survives Close.
func TestCloseRemovesEverything(t *testing.T) {
	topo := build(t, smallScenario())
	pids := topo.ServerPIDs("p")
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	checkGone(t, topo.Prefix(), pids)
	if err := topo.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := topo.Command(topo.NodeNS(), "true").Run(); err == nil {
		t.Error("a command in a closed topology ran")
	}
}

// TestBuildFailureCleansUp: a scenario rejected up front creates nothing, and a build that fails
// halfway (the echo server cannot listen twice on one port) removes what it had made.
func TestBuildFailureCleansUp(t *testing.T) {
	requireTopology(t)
	for name, mutate := range map[string]func(*Scenario){
		"duplicate IP":   func(s *Scenario) { s.Pods = append(s.Pods, Pod{Name: "q", IP: "10.0.1.1", Local: true}) },
		"invalid IP":     func(s *Scenario) { s.External[0].IP = "203.0.113" },
		"duplicate port": func(s *Scenario) { s.Pods[0].Ports = []Port{{"TCP", 80}, {"TCP", 80}} },
	} {
		t.Run(name, func(t *testing.T) {
			s := smallScenario()
			s.Prefix, s.EchoBin = mustPrefix(t), support.EchoBin
			mutate(&s)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			topo, err := Build(ctx, s)
			if err == nil {
				topo.Close()
				t.Fatal("Build succeeded")
			}
			t.Logf("Build: %v", err)
			checkGone(t, s.Prefix, nil)
		})
	}
}

// TestCleanupPrefix removes the leftovers of a topology that was not closed, its servers included.
func TestCleanupPrefix(t *testing.T) {
	topo := build(t, smallScenario())
	pids := topo.ServerPIDs("p")
	// A pin directory named with the prefix, as the eBPF tests make (a plain
	// directory on bpffs stands in for one full of pins).
	// It can only be made where bpffs is mounted.
	pins := filepath.Join(bpffsDir, topo.Prefix()+"-pins")
	madePins := os.Mkdir(pins, 0o700) == nil
	removed, err := CleanupPrefix(topo.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("removed %v", removed)
	want := 6 // 4 namespaces (lan, node, pod, client) and 2 cgroups (node, ext)
	if madePins {
		want++
	}
	if len(removed) != want {
		t.Errorf("removed %d things, want %d: %v", len(removed), want, removed)
	}
	if _, err := os.Stat(pins); !os.IsNotExist(err) {
		t.Errorf("%s is still there: %v", pins, err)
	}
	checkGone(t, topo.Prefix(), pids)
	if _, err := CleanupPrefix("x"); err == nil {
		t.Error("CleanupPrefix accepted a prefix without the sy marker")
	}
}

// TestCleanupSparesLiveRuns: Cleanup(false) leaves the topologies of running processes alone.
func TestCleanupSparesLiveRuns(t *testing.T) {
	topo := build(t, smallScenario())
	removed, err := Cleanup(false)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range removed {
		if strings.Contains(r, topo.Prefix()) {
			t.Errorf("Cleanup(false) removed %s of a live run", r)
		}
	}
	if _, err := os.Stat(NetnsPath(topo.NodeNS())); err != nil {
		t.Error(err)
	}
}

// checkGone fails if anything of the prefix remains, or one of the pids still runs.
func checkGone(t *testing.T, prefix string, pids []int) {
	t.Helper()
	names, err := ourNames()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, prefix+"-") {
			t.Errorf("left behind: %s", n)
		}
	}
	if _, err := os.Stat(filepath.Join(ownerDir, prefix)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("owner file of %s left behind (%v)", prefix, err)
	}
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("process %d still runs", pid)
		}
	}
}

// running is false for a process that is gone or a zombie: CleanupPrefix kills processes but only
// their parent (this test, through Close) can reap them.
func running(pid int) bool {
	b, err := os.ReadFile(filepathProc(pid, "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

func mustPrefix(t *testing.T) string {
	p, err := NewPrefix()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func procCgroup(t *testing.T, pid int) string {
	b, err := os.ReadFile(filepathProc(pid, "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rel, ok := strings.CutPrefix(line, "0::"); ok {
			mount, err := cgroupMount()
			if err != nil {
				t.Fatal(err)
			}
			return filepath.Join(mount, rel)
		}
	}
	t.Fatalf("no cgroup v2 line in %q", b)
	return ""
}

func cgroupProcs(t *testing.T, cg string) []int {
	pids, err := cgroupPids(cg)
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func filepathProc(pid int, file string) string {
	return filepath.Join("/proc", strconv.Itoa(pid), file)
}

func filepathProcNS(pid int) string { return filepathProc(pid, "ns/net") }

// TestAssertIsolatedBesideAnotherRun: another run adding and deleting its namespaces meanwhile must not
// fail this run's isolation check (iproute2's list-id looks up every named namespace of the machine).
func TestAssertIsolatedBesideAnotherRun(t *testing.T) {
	topo := build(t, smallScenario())
	stop := churnNamespaces(t)
	checks := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); checks++ {
		if err := topo.AssertIsolated(); err != nil {
			t.Errorf("check %d: %v", checks, err)
			break
		}
	}
	cycles, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d checks while the other run made and deleted %d namespaces", checks, cycles)
	if cycles == 0 {
		t.Error("the other run made no namespace: the test proved nothing")
	}
}

// churnNamespaces adds and deletes a namespace of another run (a prefix of its own, claimed so that
// cleanups of other tests leave it alone) until stop, which returns how many it made.
func churnNamespaces(t *testing.T) (stop func() (int, error)) {
	t.Helper()
	prefix := mustPrefix(t)
	if err := claimPrefix(prefix); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := CleanupPrefix(prefix + "-"); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := churn(ctx, prefix+"-churn")
		done <- result{n, err}
	}()
	return func() (int, error) {
		cancel()
		r := <-done
		return r.n, r.err
	}
}

func churn(ctx context.Context, name string) (int, error) {
	for n := 0; ; n++ {
		if ctx.Err() != nil {
			return n, nil
		}
		// Not ctx: a cancel between the two would leave the namespace behind.
		if err := addNetns(context.Background(), name); err != nil {
			return n, err
		}
		if err := delNetns(context.Background(), name); err != nil {
			return n, err
		}
	}
}
