package restart

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/flowrun"
	"github.com/switchyard/switchyard/test/topology"
)

const (
	nodeName  = "node-a"
	clientPod = "client"
	svcAddr   = "172.30.0.10:80"
	backend1  = "10.0.1.1:8080"
	backend2  = "10.0.1.2:8080"
)

var backends = []string{backend1, backend2}

func scenario() topology.Scenario {
	ports := []topology.Port{{Protocol: "TCP", Port: 8080}}
	return topology.Scenario{
		Node: topology.Node{Name: nodeName, IPs: []string{"192.168.0.2"}},
		Pods: []topology.Pod{
			{Name: "p1", IP: "10.0.1.1", Local: true, Ports: ports},
			{Name: "p2", IP: "10.0.1.2", Local: true, Ports: ports},
			{Name: clientPod, IP: "10.0.1.100", Local: true},
		},
	}
}

// objects is the cluster state: the node, and a ClusterIP service 172.30.0.10:80 -> both pods' 8080.
func objects() flow.Objects {
	ready := func(ip string) flow.Endpoint {
		return flow.Endpoint{Addresses: []string{ip}, Ready: ptr.To(true), Serving: ptr.To(true),
			Terminating: ptr.To(false), NodeName: ptr.To(nodeName)}
	}
	c := flow.Case{
		Name: "restart",
		Node: flow.Node{Name: nodeName, IPs: []string{"192.168.0.2"}},
		Services: []flow.Service{{
			Namespace: "default", Name: "web", ClusterIP: "172.30.0.10",
			Ports: []flow.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: 8080}},
		}},
		EndpointSlices: []flow.EndpointSlice{{
			Namespace: "default", Service: "web", Name: "web-1",
			Ports:     []flow.EndpointPort{{Name: "http", Protocol: "TCP", Port: 8080}},
			Endpoints: []flow.Endpoint{ready("10.0.1.1"), ready("10.0.1.2")},
		}},
	}
	return c.ToObjects()
}

// TestKill9UnderLoad restarts the agent twice with kill -9 while a client pod opens new connections
// to a ClusterIP service back to back and holds one socket open: first with a second without any
// agent before the new one starts, then with the new one started at once. Every connection must
// reach a backend; the held socket must keep showing the service address; the programs must stay
// attached throughout.
func TestKill9UnderLoad(t *testing.T) {
	requirePrereqs(t)
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	// Not deferred: the processes started with ctx must outlive the test function, for the
	// cleanups to stop them their own way (this runs after every other cleanup).
	t.Cleanup(cancel)

	topo := buildTopology(t)
	ag := newAgents(t, topo, objects())
	ag.start(t, ctx)

	held, first := startHolder(t, ctx, topo, topo.PodNS(clientPod), svcAddr)
	t.Logf("held connection: %v", first)
	if first.Err != "" || first.Peer != svcAddr || !slices.Contains(backends, first.Endpoint) {
		t.Fatalf("held connection before any restart: %v; want peer %s and a backend", first, svcAddr)
	}

	links := watchLinks(t, topo.NodeCgroup())
	st := startStream(t, ctx, topo)
	st.waitCount(t, ctx, 100)

	// A kill, a second with no agent at all, and a new agent taking over.
	st.setPhase("kill -9 #1, then no agent for 1s")
	ag.kill9(t)
	time.Sleep(time.Second)
	st.setPhase("agent #2 starting")
	ag.start(t, ctx)
	st.setPhase("agent #2 synced")
	time.Sleep(time.Second)
	checkHeld(t, held, first, "after restart #1")

	// A kill and an immediate restart.
	st.setPhase("kill -9 #2, agent #3 started at once")
	ag.kill9(t)
	ag.start(t, ctx)
	st.setPhase("agent #3 synced")
	time.Sleep(time.Second)

	res := st.stop(t)
	linkRes := links.stop()
	checkHeld(t, held, first, "after restart #2")

	// Every connection reached a backend, in every phase, and the stream covered every phase.
	t.Logf("stream: %d connections; per backend %v", res.total, res.endpoints)
	for _, p := range res.phases {
		t.Logf("  %-45s %6d connections completed, %d failed", p.name, p.n, p.bad)
		if p.n == 0 {
			t.Errorf("phase %q: no connection completed in it; the stream did not cover it", p.name)
		}
	}
	if res.bad > 0 {
		t.Errorf("%d of %d connections did not reach a backend; the first ones:\n%s", res.bad, res.total,
			strings.Join(res.failures, "\n"))
	}
	for _, b := range backends {
		if res.endpoints[b] == 0 {
			t.Errorf("backend %s was never reached", b)
		}
	}
	// The programs never left the cgroup.
	t.Logf("links: %d samples of the node cgroup's connect4/getpeername4 programs, minimum %d", linkRes.samples, linkRes.min)
	if linkRes.err != nil {
		t.Errorf("querying the cgroup's programs: %v", linkRes.err)
	}
	if linkRes.samples == 0 || linkRes.min == 0 {
		t.Errorf("the node cgroup had no program on a hook at some point (%d samples, first at %s)", linkRes.samples,
			linkRes.firstZero)
	}
	t.Logf("runtime %v", time.Since(begin).Round(time.Millisecond))
}

func checkHeld(t *testing.T, h *holder, first holdReport, when string) {
	t.Helper()
	r := h.check(t)
	t.Logf("held connection %s: %v", when, r)
	if r.Err != "" || r.Peer != svcAddr || r.State != first.State {
		t.Errorf("held connection %s: %v; want getpeername %s and state %s as before", when, r, svcAddr, first.State)
	}
}

// buildTopology builds the scenario; at the end, it is closed and nothing of it may be left.
func buildTopology(t *testing.T) *topology.Topology {
	t.Helper()
	var prefix string
	// Registered first, so it runs after the topology's own cleanup.
	t.Cleanup(func() {
		if prefix != "" {
			checkNothingLeft(t, prefix)
		}
	})
	topo := support.Build(t, scenario())
	prefix = topo.Prefix()
	return topo
}

func checkNothingLeft(t *testing.T, prefix string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Errorf("ip netns list: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, prefix+"-") {
			t.Errorf("namespace left behind: %s", l)
		}
	}
	ents, err := os.ReadDir(bpffs)
	if err != nil {
		t.Errorf("read %s: %v", bpffs, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("left in %s: %s", bpffs, e.Name())
		}
	}
}

// ---- the agent ----

// agents runs the agent in the node namespace (and cgroup), one at a time, always with the same
// flags, manifests and pin directory.
type agents struct {
	topo      *topology.Topology
	args      []string
	logDir    string
	manifests string // the directory the agents read
	pinDir    string
	n         int       // agents started so far
	cur       *exec.Cmd // the running one
	curLog    string
	curFile   *os.File
}

func newAgents(t *testing.T, topo *topology.Topology, objs flow.Objects, extraArgs ...string) *agents {
	t.Helper()
	work := t.TempDir()
	manifests := filepath.Join(work, "manifests")
	if err := os.Mkdir(manifests, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := objs.WriteManifests(manifests); err != nil {
		t.Fatal(err)
	}
	a := &agents{topo: topo, logDir: work, manifests: manifests, pinDir: filepath.Join(bpffs, topo.Prefix()+"-switchyard")}
	c := flow.Case{Node: flow.Node{Name: nodeName}, Config: flow.Config{ClusterCIDR: "10.0.0.0/8"}}
	a.args = append(flowrun.AgentArgs("ebpf", c, topo, a.pinDir), "--source=file:"+manifests)
	a.args = append(a.args, extraArgs...)
	// Runs before the topology's Close: stop the agent, then unpin (which detaches the programs),
	// in the node namespace as the agent ran there.
	t.Cleanup(func() {
		a.stop(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := topo.Run(ctx, topo.NodeNS(), switchyardBin, "cleanup", "--bpf-root="+a.pinDir); err != nil {
			t.Errorf("switchyard cleanup: %v", err)
		}
		if _, err := os.Stat(a.pinDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after switchyard cleanup (stat: %v)", a.pinDir, err)
		}
	})
	return a
}

// start starts a new agent and waits for its first sync.
func (a *agents) start(t *testing.T, ctx context.Context) {
	t.Helper()
	if a.cur != nil {
		t.Fatal("an agent is running already")
	}
	a.n++
	a.curLog = filepath.Join(a.logDir, fmt.Sprintf("agent-%d.log", a.n))
	f, err := os.Create(a.curLog)
	if err != nil {
		t.Fatal(err)
	}
	cmd := a.topo.CommandContext(ctx, a.topo.NodeNS(), switchyardBin, a.args...)
	cmd.Stdout, cmd.Stderr = f, f
	started := time.Now()
	if err := a.topo.Start(cmd); err != nil {
		f.Close()
		t.Fatal(err)
	}
	a.cur, a.curFile = cmd, f
	if err := flowrun.WaitSynced(ctx, a.topo, nil, cmd); err != nil {
		t.Fatalf("agent #%d: %v\n%s", a.n, err, a.logTail())
	}
	t.Logf("agent #%d (pid %d) synced %v after its start", a.n, cmd.Process.Pid, time.Since(started).Round(time.Millisecond))
}

// kill9 kills the running agent with SIGKILL and reaps it.
func (a *agents) kill9(t *testing.T) {
	t.Helper()
	if err := a.cur.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 agent #%d: %v", a.n, err)
	}
	err := a.cur.Wait()
	if ws, ok := a.cur.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("agent #%d did not die of SIGKILL: %v\n%s", a.n, err, a.logTail())
	}
	a.cur = nil
	a.curFile.Close()
}

// stop ends the running agent, if any, the polite way (SIGTERM), as a node shutting down would.
func (a *agents) stop(t *testing.T) {
	t.Helper()
	if a.cur == nil {
		return
	}
	cmd := a.cur
	a.cur = nil
	defer a.curFile.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM agent #%d: %v", a.n, err)
	}
	timer := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	if err := cmd.Wait(); err != nil {
		t.Errorf("agent #%d after SIGTERM: %v\n%s", a.n, err, a.logTail())
	}
}

func (a *agents) logTail() string {
	b, _ := os.ReadFile(a.curLog)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// ---- the stream of new connections ----

// stream is one probe in the client pod opening new connections back to back, each line of its
// output one connection, attributed to the phase of the test in which it was read.
type stream struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	phase string
	res   streamResult
}

type streamResult struct {
	total, bad int
	endpoints  map[string]int
	failures   []string // the first ones
	phases     []phaseCount
	readErr    error
}

type phaseCount struct {
	name   string
	n, bad int
}

// startStream starts the probe with a count it cannot reach in the test: stop kills it.
func startStream(t *testing.T, ctx context.Context, topo *topology.Topology) *stream {
	t.Helper()
	sctx, cancel := context.WithCancel(ctx)
	cmd := topo.CommandContext(sctx, topo.PodNS(clientPod), support.ProbeBin,
		"-proto", "tcp", "-dst", svcAddr, "-timeout", "1s", "-n", "100000000")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := topo.Start(cmd); err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &stream{cmd: cmd, cancel: cancel, done: make(chan struct{})}
	s.res.endpoints = map[string]int{}
	s.setPhase("agent #1, before any restart")
	t.Cleanup(func() { s.stop(t) })
	go func() {
		defer close(s.done)
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				// A line cut short is the connection in progress when the probe was killed.
				return
			}
			s.record(line)
		}
	}()
	return s
}

func (s *stream) setPhase(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase = name
	s.res.phases = append(s.res.phases, phaseCount{name: name})
}

func (s *stream) record(line string) {
	var r topology.ProbeResult
	err := json.Unmarshal([]byte(line), &r)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &s.res.phases[len(s.res.phases)-1]
	s.res.total++
	p.n++
	if err == nil && r.Result == "ok" && slices.Contains(backends, r.Endpoint) {
		s.res.endpoints[r.Endpoint]++
		return
	}
	s.res.bad++
	p.bad++
	if len(s.res.failures) < 20 {
		s.res.failures = append(s.res.failures, fmt.Sprintf("  #%d, completed in phase %q: %s", s.res.total, p.name, strings.TrimSpace(line)))
	}
}

// waitCount waits until the stream has completed n connections.
func (s *stream) waitCount(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		got := s.res.total
		s.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("the stream completed %d connections in 10s, want %d to start", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop kills the probe, reaps it and returns what it saw.
func (s *stream) stop(t *testing.T) streamResult {
	s.once.Do(func() {
		s.cancel()
		<-s.done
		err := s.cmd.Wait()
		if ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			// It ended by itself: it ran out of connections, or failed, before the test ended.
			t.Errorf("the probe ended before the test did (%v): the stream did not cover the test", err)
		}
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res
}

// ---- the programs on the node's cgroup ----

// linkWatch samples, every few milliseconds, how many programs the node cgroup has on the hooks the
// stream and the held connection go through.
type linkWatch struct {
	stopc chan struct{}
	done  chan linkResult
}

type linkResult struct {
	samples, min int
	firstZero    string
	err          error
}

func watchLinks(t *testing.T, cgroup string) *linkWatch {
	t.Helper()
	fd, err := unix.Open(cgroup, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := &linkWatch{stopc: make(chan struct{}), done: make(chan linkResult, 1)}
	go func() {
		defer unix.Close(fd)
		res := linkResult{min: -1}
		start := time.Now()
		for {
			for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCgroupInet4GetPeername} {
				q, err := link.QueryPrograms(link.QueryOptions{Target: fd, Attach: at})
				if err != nil {
					res.err = err
					w.done <- res
					return
				}
				n := len(q.Programs)
				if res.min < 0 || n < res.min {
					res.min = n
				}
				if n == 0 && res.firstZero == "" {
					res.firstZero = fmt.Sprintf("%v into the stream, %s", time.Since(start).Round(time.Millisecond), at)
				}
			}
			res.samples++
			select {
			case <-w.stopc:
				w.done <- res
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *linkWatch) stop() linkResult {
	select {
	case <-w.stopc:
	default:
		close(w.stopc)
	}
	r, ok := <-w.done
	if !ok {
		return linkResult{err: errors.New("stopped twice")}
	}
	close(w.done)
	return r
}
