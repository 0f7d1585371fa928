package restart

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

	topo := buildTopology(t, scenario())
	ag := newAgents(t, topo, objects())
	ag.start(t, ctx)

	held, first := startHolder(t, ctx, topo, topo.PodNS(clientPod), svcAddr)
	t.Logf("held connection: %v", first)
	if first.Err != "" || first.Peer != svcAddr || !slices.Contains(backends, first.Endpoint) {
		t.Fatalf("held connection before any restart: %v; want peer %s and a backend", first, svcAddr)
	}

	links := watchPrograms(t, cgroupHooks(topo.NodeCgroup()))
	st := startStream(t, ctx, topo, streamSpec{ns: topo.PodNS(clientPod), dst: svcAddr, endpoints: backends})
	restartTwice(t, ctx, ag, st, 0, func(when string) { checkHeld(t, held, first, "after "+when) })

	checkStream(t, st.stop(t), backends)
	checkPrograms(t, links.stop())
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

// restartTwice kills the agent with kill -9 twice while st runs, and restarts it: first after a
// second without any agent, then at once. Before, the stream runs for at least 100 connections and
// warmup, the baseline; each new agent gets a second of the stream after its sync; then
// afterRestart("restart #N") runs. Every step is a phase of the stream.
func restartTwice(t *testing.T, ctx context.Context, ag *agents, st *stream, warmup time.Duration, afterRestart func(when string)) {
	t.Helper()
	st.waitCount(t, ctx, 100)
	time.Sleep(warmup)

	// A kill, a second with no agent at all, and a new agent taking over.
	st.setPhase("kill -9 #1, then no agent for 1s")
	ag.kill9(t)
	time.Sleep(time.Second)
	st.setPhase("agent #2 starting")
	ag.start(t, ctx)
	st.setPhase("agent #2 synced")
	time.Sleep(time.Second)
	afterRestart("restart #1")

	// A kill and an immediate restart.
	st.setPhase("kill -9 #2, agent #3 started at once")
	ag.kill9(t)
	ag.start(t, ctx)
	st.setPhase("agent #3 synced")
	time.Sleep(time.Second)
	afterRestart("restart #2")
}

// checkStream: every connection reached one of endpoints, in every phase, the stream covered every
// phase, and every endpoint was reached.
func checkStream(t *testing.T, res streamResult, endpoints []string) {
	t.Helper()
	t.Logf("stream: %d connections; per backend %v", res.total, res.endpoints)
	for _, p := range res.phases {
		t.Logf("  %-45s %6d connections completed, %d failed", p.name, p.n, p.bad)
		if p.n == 0 {
			t.Errorf("phase %q: no connection completed in it; the stream did not cover it", p.name)
		}
	}
	if res.bad > 0 {
		t.Errorf("%d of %d connections did not reach a backend as they should; the first ones:\n%s", res.bad, res.total,
			strings.Join(res.failures, "\n"))
	}
	for _, b := range endpoints {
		if res.endpoints[b] == 0 {
			t.Errorf("backend %s was never reached", b)
		}
	}
}

// buildTopology builds sc; at the end, it is closed and nothing of it may be left.
func buildTopology(t *testing.T, sc topology.Scenario) *topology.Topology {
	t.Helper()
	var prefix string
	// Registered first, so it runs after the topology's own cleanup.
	t.Cleanup(func() {
		if prefix != "" {
			checkNothingLeft(t, prefix)
		}
	})
	topo := support.Build(t, sc)
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

// stream is one probe opening new TCP connections back to back, each line of its output one
// connection, attributed to the phase of the test in which it was read.
type stream struct {
	spec   streamSpec
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	phase string
	res   streamResult
}

// streamSpec is where the probe runs, where it connects and what it must get.
type streamSpec struct {
	ns, dst   string
	endpoints []string // a connection must reach one of these
	peerIP    string   // and, unless empty, come from this address (as the backend saw it)
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
func startStream(t *testing.T, ctx context.Context, topo *topology.Topology, spec streamSpec) *stream {
	t.Helper()
	sctx, cancel := context.WithCancel(ctx)
	cmd := topo.CommandContext(sctx, spec.ns, support.ProbeBin,
		"-proto", "tcp", "-dst", spec.dst, "-timeout", "1s", "-n", "100000000")
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
	s := &stream{spec: spec, cmd: cmd, cancel: cancel, done: make(chan struct{})}
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
	if err == nil && r.Result == "ok" && slices.Contains(s.spec.endpoints, r.Endpoint) && s.peerOK(r.Peer) {
		s.res.endpoints[r.Endpoint]++
		return
	}
	s.res.bad++
	p.bad++
	if len(s.res.failures) < 20 {
		s.res.failures = append(s.res.failures, fmt.Sprintf("  #%d, completed in phase %q: %s", s.res.total, p.name, strings.TrimSpace(line)))
	}
}

func (s *stream) peerOK(peer string) bool {
	if s.spec.peerIP == "" {
		return true
	}
	ap, err := netip.ParseAddrPort(peer)
	return err == nil && ap.Addr().String() == s.spec.peerIP
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

// ---- the programs on the node's hooks ----

// progWatch samples, every few milliseconds, the programs on the hooks the traffic goes through,
// and counts the samples in which one was missing.
type progWatch struct {
	stopc chan struct{}
	done  chan progResult
}

type progResult struct {
	what          string // the hooks watched
	samples, gaps int
	firstGap      string
	err           error
}

// hookSampler is what a watch samples: open prepares it (on the sampling goroutine, locked to its
// thread, which it may move into another namespace: the thread is retired after the watch), and
// returns sample, which describes what is missing ("" when nothing is), and a cleanup.
type hookSampler struct {
	what string
	open func() (sample func() (string, error), cleanup func(), err error)
}

func watchPrograms(t *testing.T, hs hookSampler) *progWatch {
	t.Helper()
	w := &progWatch{stopc: make(chan struct{}), done: make(chan progResult, 1)}
	opened := make(chan error, 1)
	go func() {
		// Never unlocked: a thread open may have moved to another namespace ends with the goroutine.
		runtime.LockOSThread()
		res := progResult{what: hs.what}
		sample, cleanup, err := hs.open()
		opened <- err
		if err != nil {
			close(w.done)
			return
		}
		defer cleanup()
		start := time.Now()
		for {
			missing, err := sample()
			if err != nil {
				res.err = err
				w.done <- res
				return
			}
			if missing != "" {
				res.gaps++
				if res.firstGap == "" {
					res.firstGap = fmt.Sprintf("%v into the watch: %s", time.Since(start).Round(time.Millisecond), missing)
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
	if err := <-opened; err != nil {
		t.Fatalf("watching %s: %v", hs.what, err)
	}
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *progWatch) stop() progResult {
	select {
	case <-w.stopc:
	default:
		close(w.stopc)
	}
	r, ok := <-w.done
	if !ok {
		return progResult{err: errors.New("stopped twice")}
	}
	close(w.done)
	return r
}

// checkPrograms: no sample missed a program.
func checkPrograms(t *testing.T, r progResult) {
	t.Helper()
	t.Logf("programs: %d samples of %s, %d with one missing", r.samples, r.what, r.gaps)
	if r.err != nil {
		t.Errorf("querying %s: %v", r.what, r.err)
	}
	if r.samples == 0 || r.gaps > 0 {
		t.Errorf("%s went without a program at some point (%d of %d samples; the first: %s)", r.what, r.gaps,
			r.samples, r.firstGap)
	}
}

// cgroupHooks samples the node cgroup's connect4 and getpeername4 hooks, which the stream and the
// held connection of a pod go through.
func cgroupHooks(cgroup string) hookSampler {
	return hookSampler{what: "the node cgroup's connect4/getpeername4 programs", open: func() (func() (string, error), func(), error) {
		fd, err := unix.Open(cgroup, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, nil, err
		}
		sample := func() (string, error) {
			for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCgroupInet4GetPeername} {
				q, err := link.QueryPrograms(link.QueryOptions{Target: fd, Attach: at})
				if err != nil {
					return "", err
				}
				if len(q.Programs) == 0 {
					return "no program on " + at.String(), nil
				}
			}
			return "", nil
		}
		return sample, func() { unix.Close(fd) }, nil
	}}
}
