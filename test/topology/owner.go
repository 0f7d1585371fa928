package topology

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// ownerDir holds one file per run, naming the process that owns it, so that a cleanup started
// while other tests run can tell their topologies from leftovers.
const ownerDir = "/run/switchyard-topology"

// claimPrefix records this process as the owner of the prefix; it fails if the prefix is taken.
func claimPrefix(prefix string) error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return fmt.Errorf("owner directory: %w", err)
	}
	start, _, err := startTime(os.Getpid())
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(ownerDir, prefix), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("claim prefix %s: %w", prefix, err)
	}
	_, err = fmt.Fprintf(f, "%d %s\n", os.Getpid(), start)
	return errors.Join(err, f.Close())
}

func releasePrefix(prefix string) error {
	err := os.Remove(filepath.Join(ownerDir, prefix))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release prefix: %w", err)
	}
	return nil
}

func ownerPrefixes() ([]string, error) {
	ents, err := os.ReadDir(ownerDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("owner directory: %w", err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}

// ownerAlive tells whether the process that claimed the prefix still runs (same pid, same start
// time, so a recycled pid does not count). Without an owner file, the run is a leftover.
func ownerAlive(prefix string) bool {
	b, err := os.ReadFile(filepath.Join(ownerDir, prefix))
	if err != nil {
		return false
	}
	var pid int
	var start string
	if _, err := fmt.Sscan(string(b), &pid, &start); err != nil {
		return false
	}
	now, state, err := startTime(pid)
	// A killed owner stays a zombie until PID 1 reaps it: it is gone all the same.
	return err == nil && now == start && state != "Z"
}

// startTime is field 22 of /proc/PID/stat (in clock ticks since boot), with the state (field 3).
func startTime(pid int) (start, state string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", fmt.Errorf("process start time: %w", err)
	}
	// The command name (field 2) may contain spaces; the fields after it are plain.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return "", "", fmt.Errorf("short /proc/%d/stat", pid)
	}
	return fields[19], fields[0], nil
}

var live = struct {
	sync.Mutex
	m map[*Topology]bool
}{m: map[*Topology]bool{}}

func register(t *Topology) {
	live.Lock()
	defer live.Unlock()
	live.m[t] = true
}

func unregister(t *Topology) {
	live.Lock()
	defer live.Unlock()
	delete(live.m, t)
}

// CloseOnSignal makes SIGINT, SIGTERM and SIGHUP close every topology of this process and then exit
// with status 1, so an interrupted `go test` leaves nothing behind. Call it from TestMain; later calls
// do nothing.
func CloseOnSignal() {
	signalOnce.Do(closeOnSignal)
}

var signalOnce sync.Once

func closeOnSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-ch
		fmt.Fprintf(os.Stderr, "topology: %v: closing every topology\n", sig)
		live.Lock()
		ts := make([]*Topology, 0, len(live.m))
		for t := range live.m {
			ts = append(ts, t)
		}
		live.Unlock()
		for _, t := range ts {
			if err := t.Close(); err != nil {
				fmt.Fprintf(os.Stderr, "topology %s: %v\n", t.Prefix(), err)
			}
		}
		os.Exit(1)
	}()
}
