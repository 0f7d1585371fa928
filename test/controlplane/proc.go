package controlplane

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/process"
)

// proc is a child process whose output goes to a log file. A goroutine waits for
// it from the start, so it is always reaped, whoever ends it.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // the Wait result; read only after done is closed
}

// startProc starts bin with args, its stdout and stderr appended to logPath. The
// child gets its own process group (so its own children can be signalled with it)
// and SIGKILL when the process that started it dies.
func startProc(name, logPath, bin string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the children the process forked (so that it reaps them: orphans
// would go to PID 1, which reaps slowly), sends it SIGTERM, waits up to grace for
// it to end, then SIGKILLs its whole process group and waits for it. It returns an
// error only when the process had to be killed.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		p.killGroup()
		return nil
	}
	p.killChildren()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		p.killGroup() // stragglers the process forked
		return nil
	case <-t.C:
	}
	p.killGroup()
	<-p.done
	return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, grace)
}

func (p *proc) killGroup() {
	// The group id is the child's pid (Setpgid). ESRCH: nobody left.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// killChildren SIGKILLs the other members of the process's group (socat's
// per-connection children; socat does not pass SIGTERM on to them) and waits up to
// a second for the process to reap them.
func (p *proc) killChildren() {
	leader := p.cmd.Process.Pid
	kids := groupMembers(leader)
	if len(kids) == 0 {
		return
	}
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	for end := time.Now().Add(time.Second); time.Now().Before(end) && len(groupMembers(leader)) > 0; {
		time.Sleep(10 * time.Millisecond)
	}
}

// groupMembers lists the processes of process group pgid other than its leader,
// zombies included (they are gone once reaped).
func groupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pgid {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			out = append(out, pid)
		}
	}
	return out
}

// exitError describes how the process ended, with the tail of its log.
func (p *proc) exitError() error {
	<-p.done
	return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.name, p.err, p.log, process.TailFile(p.log, 30))
}

// logContains reports whether the file at path contains s.
func logContains(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.Contains(b, []byte(s))
}
