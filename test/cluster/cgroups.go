package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// v2Mount is where the hybrid layout these nodes need mounts cgroup v2.
const v2Mount = "/sys/fs/cgroup/unified"

// v1Hierarchies lists the mount points of the cgroup v1 hierarchies (cpu, memory, name=systemd ...).
func v1Hierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		for i, fl := range fields {
			if fl == "-" && i+1 < len(fields) && fields[i+1] == "cgroup" && len(fields) > 4 {
				out = append(out, fields[4])
			}
		}
	}
	sort.Strings(out)
	return out, sc.Err()
}

// hybridLayout tells why the cgroup layout is not the hybrid one these nodes are built for.
func hybridLayout() error {
	if _, err := os.Stat(filepath.Join(v2Mount, "cgroup.controllers")); err != nil {
		return fmt.Errorf("no cgroup v2 at %s (test/cluster needs the hybrid layout): %w", v2Mount, err)
	}
	h, err := v1Hierarchies()
	if err != nil {
		return err
	}
	if len(h) == 0 {
		return errors.New("no cgroup v1 hierarchies (test/cluster needs the hybrid layout)")
	}
	return nil
}

// createV1 creates the cgroup name in every v1 hierarchy (kubelet checks that its cgroupRoot exists
// in each). cpuset needs cpus and mems before anything can join it.
func createV1(name string) error {
	hs, err := v1Hierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		dir := filepath.Join(h, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("cgroup v1: %w", err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			b, err := os.ReadFile(filepath.Join(h, f))
			if errors.Is(err, fs.ErrNotExist) {
				continue // not the cpuset hierarchy
			}
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				return fmt.Errorf("cgroup v1 %s: %w", filepath.Join(dir, f), err)
			}
		}
	}
	return nil
}

// subtree lists dir and the cgroups below it, deepest first.
func subtree(dir string) []string {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool {
		di, dj := strings.Count(dirs[i], "/"), strings.Count(dirs[j], "/")
		if di != dj {
			return di > dj
		}
		return dirs[i] > dirs[j]
	})
	return dirs
}

// treePids lists the processes in dir and below.
func treePids(dir string) []int {
	var pids []int
	for _, d := range subtree(dir) {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// killTree kills every process in the cgroup dir and below and waits until they are gone: through
// cgroup.kill on cgroup v2 (recursive, and it catches processes forking meanwhile), pid by pid
// elsewhere.
func killTree(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if f, err := os.OpenFile(filepath.Join(dir, "cgroup.kill"), os.O_WRONLY, 0); err == nil {
		_, werr := f.WriteString("1")
		if err := errors.Join(werr, f.Close()); err != nil {
			return fmt.Errorf("cgroup.kill %s: %w", dir, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := treePids(dir)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes %v still there after SIGKILL", dir, pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeTree removes the cgroups below dir deepest first, and dir itself when self is set. rmdir
// answers EBUSY until killed processes are really gone.
func removeTree(dir string, self bool) error {
	var errs []error
	for _, d := range subtree(dir) {
		if d == dir && !self {
			continue
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := syscall.Rmdir(d)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("rmdir cgroup %s: %w", d, err))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// removeV1 kills what is left in the v1 cgroups named name and removes them deepest first.
func removeV1(name string) ([]string, error) {
	hs, err := v1Hierarchies()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, h := range hs {
		dir := filepath.Join(h, name)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		if err := killTree(dir); err != nil {
			errs = append(errs, err)
		}
		if err := removeTree(dir, true); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "cgroup "+dir)
	}
	return removed, errors.Join(errs...)
}

// cgroupsOf returns /proc/PID/cgroup: one "id:controllers:path" line per hierarchy.
func cgroupsOf(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	return string(b), err
}
