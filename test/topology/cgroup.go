package topology

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// cgroupMount finds the cgroup v2 hierarchy: /sys/fs/cgroup/unified on hybrid hosts (like these
// machines), /sys/fs/cgroup on pure v2 ones.
func cgroupMount() (string, error) {
	for _, dir := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(dir, "cgroup.controllers")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy (no cgroup.controllers in /sys/fs/cgroup/unified or /sys/fs/cgroup)")
}

// cgroup is a child cgroup of ours, with a directory fd held open for CLONE_INTO_CGROUP.
type cgroup struct {
	path string
	dir  *os.File
}

func createCgroup(mount, name string) (*cgroup, error) {
	path := filepath.Join(mount, name)
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	dir, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	return &cgroup{path: path, dir: dir}, nil
}

func writeExisting(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func cgroupPids(path string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("read cgroup.procs: %w", err)
	}
	return parsePids(string(b))
}

// killCgroup SIGKILLs every process in the cgroup: through cgroup.kill (Linux 5.14+), which also
// catches processes forking meanwhile, or pid by pid on older kernels. A cgroup already removed has
// nothing left to kill.
func killCgroup(path string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	// No O_CREATE: cgroupfs answers a create of a missing file (before 5.14) with EACCES.
	err := writeExisting(filepath.Join(path, "cgroup.kill"), "1")
	if err == nil {
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cgroup.kill: %w", err)
	}
	pids, err := cgroupPids(path)
	if err != nil {
		return err
	}
	return killPids(pids)
}

func killPids(pids []int) error {
	var errs []error
	for _, pid := range pids {
		if pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// removeCgroup kills what is left in the cgroup and removes it. rmdir fails with EBUSY until the
// killed processes are really gone, which can take a moment.
func removeCgroup(path string) error {
	if err := killCgroup(path); err != nil {
		return fmt.Errorf("cgroup %s: %w", path, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Rmdir(path)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			pids, _ := cgroupPids(path)
			return fmt.Errorf("rmdir cgroup %s (pids %v): %w", path, pids, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listCgroups returns the names of the direct children of the cgroup v2 mount.
func listCgroups(mount string) ([]string, error) {
	ents, err := os.ReadDir(mount)
	if err != nil {
		return nil, fmt.Errorf("list cgroups: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
