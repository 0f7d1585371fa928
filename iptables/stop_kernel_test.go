package iptables

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/flowrun"
	"github.com/switchyard/switchyard/test/topology"
)

// stopBound is how long a stopped sync may take to return: liveness, not speed
// (the tools die at once; this leaves room for a loaded machine).
const stopBound = 20 * time.Second

// The agent's shutdown during the first sync of 10,000 services x 10 endpoints
// (a restore that runs for minutes with --noflush): the sync returns within
// seconds with context.Canceled, and each table holds either none of the
// restore's chains or all of them, never a part (the tools apply a table at its
// COMMIT: nft in one netlink batch, legacy in one table replace).
func TestSyncAt10kServicesStopsWhenCanceledOnTheKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a scale test of the userland tools (the kernel matrix runs with -short)")
	}
	for _, v := range []netfilter.Variant{netfilter.VariantNFT, netfilter.VariantLegacy} {
		t.Run(string(v), func(t *testing.T) {
			support.Require(t)
			topology.RequireTools(t, netfilter.VariantTools(v)...)
			topology.RequireTools(t, strings.TrimSuffix(netfilter.VariantTools(v)[0], "-restore"))
			testStopDuringRestore(t, v)
		})
	}
}

func testStopDuringRestore(t *testing.T, v netfilter.Variant) {
	topo := support.Build(t, topology.Scenario{Node: topology.Node{Name: nodeName, IPs: []string{"192.168.0.2"}}})
	sc := scenario{}
	c := numberedCluster(sc, 10000, 10)
	started := make(chan struct{}, 1)
	run := func(ctx context.Context, name string, args ...string) *exec.Cmd {
		if strings.HasSuffix(name, "-restore") {
			select {
			case started <- struct{}{}:
			default:
			}
		}
		return topo.CommandContext(ctx, topo.NodeNS(), name, args...)
	}
	r := netfilter.NewRestorer(dataplane.IPv4, v, run)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	begin := time.Now()
	go func() {
		done <- topology.OnThreadIn(topo.NodeNS(), func() error { return syncOnce(ctx, sc, c.st, v, r) })
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("the sync ended before its restore started: %v", err)
	}
	t.Logf("%s: the restore started %v after the sync", v, time.Since(begin).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // the tool is well into its input
	canceled := time.Now()
	cancel()
	err := <-done // unbounded: a sync that ignores the cancel shows how long it took
	took := time.Since(canceled)
	t.Logf("%s: Sync returned %v after the cancel: %v", v, took.Round(time.Millisecond), err)
	if took > stopBound {
		t.Errorf("Sync returned %v after its context was canceled, want within %v", took, stopBound)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Sync = %v, want an error wrapping context.Canceled", err)
	}
	checkWholeTables(t, r, render(t, c.st, sc.cfg()), BaseJumps(sc.cfg()))
}

// syncOnce builds the backend and runs one full sync, on a thread in the node's
// namespace (the Jumper works in its caller's).
func syncOnce(ctx context.Context, sc scenario, st *dataplane.State, v netfilter.Variant, r netfilter.Restorer) error {
	b, err := kernelBackend(sc, v, r)
	if err != nil {
		return err
	}
	return b.Sync(ctx, st, nil)
}

// kernelBackend is an IPv4 backend on the real tools (r) and the real jumps, which work in the
// calling thread's namespace, with fakes for conntrack and sysctls.
func kernelBackend(sc scenario, v netfilter.Variant, r netfilter.Restorer) (*Backend, error) {
	j, err := netfilter.NewJumper(dataplane.IPv4, v)
	if err != nil {
		return nil, err
	}
	return NewBackend(BackendConfig{Model: sc.modelConfig(), Families: []dataplane.Family{dataplane.IPv4},
		Restorers: map[dataplane.Family]netfilter.Restorer{dataplane.IPv4: r}, Jumpers: map[dataplane.Family]netfilter.Jumper{dataplane.IPv4: j},
		Conntrack: &netfilter.FakeConntrack{}, Sysctl: netfilter.NewFakeSysctl(map[string]string{netfilter.SysctlRouteLocalnet: "0"}), MasqueradeBit: 14})
}

// checkWholeTables checks that each table holds either none of the chains the
// restore writes (only those the jumps created before it) or all of them.
func checkWholeTables(t *testing.T, r netfilter.Restorer, all Rules, jumps []netfilter.Jump) {
	t.Helper()
	for table, want := range map[string]Chains{"nat": all.NAT, "filter": all.Filter} {
		before := map[string]bool{}
		for _, j := range jumps {
			if j.Table == table {
				before[j.Target] = true
			}
		}
		var got []string
		for _, c := range chainNames(t, r, table) {
			if strings.HasPrefix(c, Prefix) {
				got = append(got, c)
			}
		}
		switch {
		case len(got) == len(want) && allIn(got, func(c string) bool { _, ok := want[c]; return ok }):
			t.Logf("%s table: all %d chains of the restore", table, len(got))
		case allIn(got, func(c string) bool { return before[c] }):
			t.Logf("%s table: none of the restore's chains (%d the jumps created)", table, len(got))
		default:
			t.Errorf("%s table holds %d SWYD- chains; the restore writes %d, the jumps create %d: part of a table",
				table, len(got), len(want), len(before))
		}
	}
}

func allIn(names []string, in func(string) bool) bool {
	for _, n := range names {
		if !in(n) {
			return false
		}
	}
	return true
}

// The agent binary (--mode=iptables, fed 10,000 services x 10 endpoints from
// manifests), sent SIGTERM two seconds into its first restore: it exits within
// seconds with status 0 and leaves the nat table whole, with none of the
// services' chains or all of them.
func TestAgentStopsDuringItsFirstSyncOnTheKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a scale test of the userland tools (the kernel matrix runs with -short)")
	}
	v := netfilter.VariantNFT
	support.Require(t)
	topology.RequireTools(t, append(netfilter.VariantTools(v), "iptables-nft", "nft")...)
	bin, err := flowrun.BuildAgent(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	topo := support.Build(t, topology.Scenario{Node: topology.Node{Name: nodeName, IPs: []string{"192.168.0.2"}}})
	manifests := t.TempDir()
	if err := manifestsOf10kServices().WriteManifests(manifests); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := topo.Command(topo.NodeNS(), bin, "agent", "--mode=iptables", "--iptables-variant=nft",
		"--source=file:"+manifests, "--hostname-override="+nodeName,
		"--healthz-bind-address=", "--metrics-bind-address=", "--v=2")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := topo.Start(cmd); err != nil {
		t.Fatal(err)
	}
	log := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	begin := time.Now()
	if err := waitForChild(cmd.Process.Pid, "iptables-nft-re", 2*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, log())
	}
	t.Logf("the first restore started %v after the agent", time.Since(begin).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // the tool is well into its input
	termed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait() // unbounded: an agent that ignores SIGTERM shows how long it took
	took := time.Since(termed)
	t.Logf("the agent exited %v after SIGTERM: %v", took.Round(time.Millisecond), err)
	if err != nil || took > stopBound {
		t.Errorf("agent: %v, %v after SIGTERM; want status 0 within %v\n%s", err, took, stopBound, log())
	}
	if strings.Contains(log(), "Sync failed") {
		t.Errorf("the shutdown was logged as a failed sync:\n%s", log())
	}
	t.Logf("the agent's last words:\n%s", tail(log(), 3))
	r := netfilter.NewRestorer(dataplane.IPv4, v, topo.CommandIn(topo.NodeNS()))
	n := 0
	for _, c := range chainNames(t, r, "nat") {
		if IsServiceChain(c) {
			n++
		}
	}
	if n != 0 && n != 10000*11 {
		t.Errorf("the nat table holds %d of the 110,000 chains of the services: part of a table", n)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// manifestsOf10kServices are the objects of the 10,000 services of the kernel
// tests, with the node, for the agent's file source.
func manifestsOf10kServices() flow.Objects {
	c := flow.Case{Node: flow.Node{Name: nodeName, IPs: []string{"192.168.0.2"}}}
	o := c.ToObjects()
	for i := range 10000 {
		svc, sl := numberedService(i, false, tenEndpoints(i)...)
		svc.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}
		sl.TypeMeta = metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"}
		o.Services, o.EndpointSlices = append(o.Services, svc), append(o.EndpointSlices, sl)
	}
	return o
}

// waitForChild polls until the process pid has a child whose command name
// (as /proc shows it, at most 15 bytes) is comm.
func waitForChild(pid int, comm string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if hasChild(pid, comm) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("process %d started no %s within %v", pid, comm, limit)
}

func hasChild(pid int, comm string) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		// "PID (COMM) STATE PPID ...": COMM may hold anything, so cut at the last ')'.
		s := string(data)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(s[end+1:])
		if len(fields) > 1 && s[open+1:end] == comm && fields[1] == strconv.Itoa(pid) {
			return true
		}
	}
	return false
}
