package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/flowrun"
	"github.com/switchyard/switchyard/test/topology"
)

// agent is the Switchyard agent running in the node's namespace and cgroup.
type agent struct {
	topo    *topology.Topology
	bin     string
	pinDir  string
	cmd     *exec.Cmd
	log     *os.File
	pid     int // the agent itself (nsenter execs it; checked in findPID)
	started time.Time
	done    chan struct{} // closed when the agent exited; waitErr is then set
	waitErr error
}

func startAgent(ctx context.Context, topo *topology.Topology, bin, source, logPath string) (*agent, error) {
	a := &agent{topo: topo, bin: bin, pinDir: "/sys/fs/bpf/" + topo.Prefix() + "-switchyard"}
	if topo.NodeCgroup() == "" {
		return nil, errors.New("the topology has no node cgroup: refusing to attach to the cgroup root")
	}
	var err error
	if a.log, err = os.Create(logPath); err != nil {
		return nil, err
	}
	// --v=2 (in AgentArgs) logs every sync with its duration.
	args := append(flowrun.AgentArgs("ebpf", flow.Case{Node: flow.Node{Name: nodeName}}, topo, a.pinDir), "--source=file:"+source)
	a.cmd = topo.CommandContext(ctx, topo.NodeNS(), bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	a.started = time.Now()
	if err := topo.Start(a.cmd); err != nil {
		return nil, errors.Join(err, a.log.Close())
	}
	a.done = make(chan struct{})
	go func() { a.waitErr = a.cmd.Wait(); close(a.done) }()
	if a.pid, err = findPID(a.cmd.Process.Pid, bin); err != nil {
		return a, err // the caller stops it
	}
	return a, nil
}

// findPID returns the agent's pid. nsenter without --fork (and without a pid
// namespace) execs the program, so it is normally the started pid; if it ever
// forks, the agent is its child.
func findPID(pid int, bin string) (int, error) {
	want, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe == want {
			return pid, nil
		}
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		for _, f := range strings.Fields(string(kids)) {
			c, _ := strconv.Atoi(f)
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); exe == want {
				return c, nil
			}
		}
		time.Sleep(10 * time.Millisecond) // nsenter has not exec'd yet
	}
	return 0, fmt.Errorf("no process running %s at or under pid %d", want, pid)
}

// exited reports whether the agent has died.
func (a *agent) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// memory is the agent's VmRSS and VmHWM (peak RSS) in MiB.
func (a *agent) memory() (rss, peak float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", a.pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 || fs[2] != "kB" {
			continue
		}
		kb, _ := strconv.ParseFloat(fs[1], 64)
		switch fs[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak, sc.Err()
}

// metrics scrapes /metrics from inside the node namespace (never from the root
// namespace). Keys are the sample names with their labels as printed.
func (a *agent) metrics(ctx context.Context) (map[string]float64, error) {
	out, err := a.topo.Run(ctx, a.topo.NodeNS(), "curl", "-sf", "--max-time", "5", "http://127.0.0.1:10249/metrics")
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, nil
}

// stop ends the agent and removes its pins (from inside the node namespace, so
// the reserved-ports sysctl it releases is the node's). Safe after a cancelled
// ctx: the cleanup runs without it.
func (a *agent) stop(ctx context.Context) error {
	var errs []error
	// An error only says it had already died (killed by ctx, or crashed).
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	<-a.done
	if a.waitErr != nil && ctx.Err() == nil {
		errs = append(errs, fmt.Errorf("agent exit: %w", a.waitErr))
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := a.topo.Run(cctx, a.topo.NodeNS(), a.bin, "cleanup", "--bpf-root="+a.pinDir); err != nil {
		errs = append(errs, err)
	}
	if _, err := os.Stat(a.pinDir); err == nil {
		errs = append(errs, fmt.Errorf("%s is still there after cleanup", a.pinDir))
	}
	return errors.Join(append(errs, a.log.Close())...)
}
