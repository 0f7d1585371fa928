// Package process holds what the test harnesses (test/controlplane, test/topology,
// test/cluster) do with the processes they start: start them from a thread that
// lives as long as the test process, show the end of their logs, and record which
// process owns a run so that a later cleanup can tell a live run from a leftover.
package process

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
)

var starter struct {
	once sync.Once
	reqs chan func()
}

// StartOnFixedThread starts cmd from one OS thread that lives as long as the process: Pdeathsig
// fires when the thread that forked the child ends, not the process, and Go ends a thread whenever
// a goroutine exits while locked to it (golang/go#27505), which netns-switching test code does.
func StartOnFixedThread(cmd *exec.Cmd) error {
	starter.once.Do(func() {
		starter.reqs = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread must outlive every child
			for f := range starter.reqs {
				f()
			}
		}()
	})
	done := make(chan error, 1)
	starter.reqs <- func() { done <- cmd.Start() }
	return <-done
}

// TailFile returns the last n lines of the file at path (at most 16 KiB of it), each indented by
// a tab.
func TailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("\t(no log: %v)", err)
	}
	defer f.Close()
	const max = 16 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, err := io.ReadAll(f)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Sprintf("\t(reading log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\t" + strings.Join(lines, "\n\t")
}

// StartTime is field 22 of /proc/PID/stat (clock ticks since boot), with the state (field 3).
func StartTime(pid int) (start, state string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", fmt.Errorf("process start time: %w", err)
	}
	// pid (comm) state ...; comm may contain spaces and parentheses.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return "", "", fmt.Errorf("short /proc/%d/stat", pid)
	}
	return fields[19], fields[0], nil
}

// Owner is the content of an owner file naming this process: its pid and start time.
func Owner() (string, error) {
	start, _, err := StartTime(os.Getpid())
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d %s\n", os.Getpid(), start), nil
}

// OwnerAlive tells whether the process an owner file at path names still runs: the same pid with
// the same start time (a recycled pid does not count), and not a zombie (a killed owner stays one
// until PID 1 reaps it, gone all the same). A missing or unreadable file means no.
func OwnerAlive(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var pid int
	var start string
	if _, err := fmt.Sscan(string(b), &pid, &start); err != nil {
		return false
	}
	now, state, err := StartTime(pid)
	return err == nil && now == start && state != "Z"
}
