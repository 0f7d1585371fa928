package topology

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/switchyard/switchyard/test/process"
)

// ownerDir holds one file per run, naming the process that owns it, so that a cleanup started
// while other tests run can tell their topologies from leftovers.
const ownerDir = "/run/switchyard-topology"

// claimPrefix records this process as the owner of the prefix; it fails if the prefix is taken.
func claimPrefix(prefix string) error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return fmt.Errorf("owner directory: %w", err)
	}
	owner, err := process.Owner()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(ownerDir, prefix), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("claim prefix %s: %w", prefix, err)
	}
	_, err = f.WriteString(owner)
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

// ownerAlive tells whether the process that claimed the prefix still runs. Without an owner file,
// the run is a leftover.
func ownerAlive(prefix string) bool { return process.OwnerAlive(filepath.Join(ownerDir, prefix)) }

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
