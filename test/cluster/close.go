package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/process"
	"github.com/switchyard/switchyard/test/topology"
)

// Close stops everything the cluster started and removes what it made: the nodes' processes (killed
// through their cgroups), the cgroups (deepest first), the control plane, the topology's namespaces
// and cgroups, and the state directory. It is safe to call more than once.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		start := time.Now()
		c.closeErr = c.close()
		unregister(c)
		c.logf("cluster %s closed in %v", c.prefix, time.Since(start).Round(time.Millisecond))
	})
	return c.closeErr
}

func (c *Cluster) close() error {
	var errs []error
	// kubelets first, so none restarts what the next steps kill; the controllers alongside.
	var wg sync.WaitGroup
	for _, p := range []*proc{c.kcm, c.sched} {
		if p != nil {
			wg.Add(1)
			go func() { defer wg.Done(); p.stop(5 * time.Second) }()
		}
	}
	nodeErrs := make([]error, len(c.nodes))
	for i, n := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); nodeErrs[i] = n.stop() }()
	}
	wg.Wait()
	errs = append(errs, nodeErrs...)
	if c.cp != nil {
		errs = append(errs, c.cp.Stop())
	}
	if c.topo != nil {
		errs = append(errs, c.topo.Close())
	}
	errs = append(errs, removeStateDir(c.dir))
	return errors.Join(errs...)
}

// removeStateDir removes a run's state directory, unless something is still mounted below it in
// this mount namespace (a node's mounts live only in its holder's namespace): removing through a
// mount would delete what it shows.
func removeStateDir(dir string) error {
	if dir == "" {
		return nil
	}
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("state directory %s kept: mounts below it: %s", dir, strings.Join(mounts, ", "))
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing the state directory: %w", err)
	}
	return nil
}

// mountsUnder lists the mount points at or below dir in this process's mount namespace.
func mountsUnder(dir string) ([]string, error) {
	return mountsUnderIn("/proc/self/mountinfo", dir)
}

func mountsUnderIn(mountinfo, dir string) ([]string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Leftovers lists what of the cluster is still there (call it after Close; nil means nothing).
func (c *Cluster) Leftovers() []string { return Leftovers(c.opts.StateRoot, c.prefix) }

// Leftovers lists what is left of the run prefix whose state was under stateRoot (default
// DefaultStateRoot): processes naming its state directory on their command line, cgroups (v1 and v2)
// and network namespaces carrying the prefix, mounts below the state directory in any process's
// mount namespace, and the state directory itself.
func Leftovers(stateRoot, prefix string) []string {
	if stateRoot == "" {
		stateRoot = defaultStateRoot
	}
	dir := filepath.Join(stateRoot, prefix)
	var out []string
	for _, pid := range pidsNaming(dir) {
		if _, state, err := process.StartTime(pid); err == nil && state != "Z" {
			out = append(out, fmt.Sprintf("process %d", pid))
		}
	}
	hs, _ := v1Hierarchies()
	for _, h := range append(hs, v2Mount) {
		ents, _ := os.ReadDir(h)
		for _, e := range ents {
			if e.IsDir() && strings.HasPrefix(e.Name(), prefix+"-") {
				out = append(out, "cgroup "+filepath.Join(h, e.Name()))
			}
		}
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, "netns "+e.Name())
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/mountinfo")
	for _, mi := range procs {
		if mounts, err := mountsUnderIn(mi, dir); err == nil && len(mounts) > 0 {
			out = append(out, fmt.Sprintf("mounts in the namespace of %s: %s", mi, strings.Join(mounts, ", ")))
		}
	}
	if _, err := os.Stat(dir); err == nil {
		out = append(out, "state "+dir)
	}
	return out
}

// The owner file of a run: the pid and start time of the process that started it.
const ownerFile = "owner"

func writeOwner(dir string) error {
	owner, err := process.Owner()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(owner), 0o644)
}

// ownerAlive tells whether the process that started the run in dir still runs.
func ownerAlive(dir string) bool { return process.OwnerAlive(filepath.Join(dir, ownerFile)) }

var prefixRE = regexp.MustCompile(`^sy[0-9a-f]{6}$`)

// DefaultStateRoot is where runs keep their state unless Options.StateRoot says otherwise.
const DefaultStateRoot = defaultStateRoot

// Down removes the clusters left under stateRoot (default DefaultStateRoot) by processes that died
// without closing them: with all, every cluster there, running ones included; with prefix, only
// that run. It kills every process of the run (those whose command line names its state directory,
// and everything in its nodes' cgroups), removes its v1 and v2 cgroups, the topology's namespaces,
// and the state directory. It returns what it removed.
func Down(stateRoot string, all bool, prefix string) ([]string, error) {
	if stateRoot == "" {
		stateRoot = defaultStateRoot
	}
	ents, err := os.ReadDir(stateRoot)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !prefixRE.MatchString(e.Name()) || (prefix != "" && e.Name() != prefix) {
			continue
		}
		dir := filepath.Join(stateRoot, e.Name())
		if !all && prefix == "" && ownerAlive(dir) {
			continue
		}
		r, err := downRun(e.Name(), dir)
		removed = append(removed, r...)
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// downRun removes one run's leftovers.
func downRun(prefix, dir string) ([]string, error) {
	var removed []string
	var errs []error
	// Processes of the run in the root namespace and elsewhere: every one of them (apiserver, etcd,
	// controllers, bridges, containerd, shims, kubelet, holder) names the state directory.
	for _, pid := range pidsNaming(dir) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			removed = append(removed, fmt.Sprintf("process %d", pid))
		}
	}
	// The nodes' processes (containers included) and cgroups below the topology's v2 cgroups.
	if ents, err := os.ReadDir(v2Mount); err == nil {
		for _, e := range ents {
			if e.IsDir() && strings.HasPrefix(e.Name(), prefix+"-") {
				p := filepath.Join(v2Mount, e.Name())
				errs = append(errs, killTree(p), removeTree(p, false))
			}
		}
	}
	if hs, err := v1Hierarchies(); err == nil {
		names := map[string]bool{}
		for _, h := range hs {
			ents, _ := os.ReadDir(h)
			for _, e := range ents {
				if e.IsDir() && strings.HasPrefix(e.Name(), prefix+"-") {
					names[e.Name()] = true
				}
			}
		}
		var sorted []string
		for n := range names {
			sorted = append(sorted, n)
		}
		sort.Strings(sorted)
		for _, n := range sorted {
			r, err := removeV1(n)
			removed = append(removed, r...)
			errs = append(errs, err)
		}
	}
	r, err := topology.CleanupPrefix(prefix + "-")
	removed = append(removed, r...)
	errs = append(errs, err)
	// Processes killed above may take a moment to be gone; none holds a mount in this namespace.
	if err := removeStateDir(dir); err != nil {
		errs = append(errs, err)
	} else {
		removed = append(removed, "state "+dir)
	}
	return removed, errors.Join(errs...)
}

// pidsNaming lists the processes (other than this one) whose command line contains s.
func pidsNaming(s string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		if strings.Contains(string(b), s) {
			out = append(out, pid)
		}
	}
	return out
}

var live = struct {
	sync.Mutex
	m map[*Cluster]bool
}{m: map[*Cluster]bool{}}

func register(c *Cluster) {
	live.Lock()
	defer live.Unlock()
	live.m[c] = true
}

func unregister(c *Cluster) {
	live.Lock()
	defer live.Unlock()
	delete(live.m, c)
}

var signalOnce sync.Once

// CloseOnSignal makes SIGINT, SIGTERM and SIGHUP close every cluster of this process and then exit
// with status 1, so an interrupted `go test` leaves nothing behind. Call it from TestMain (it also
// closes the topologies of the process, as topology.CloseOnSignal does); later calls do nothing.
func CloseOnSignal() {
	signalOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		go func() {
			sig := <-ch
			fmt.Fprintf(os.Stderr, "cluster: %v: closing every cluster\n", sig)
			live.Lock()
			cs := make([]*Cluster, 0, len(live.m))
			for c := range live.m {
				cs = append(cs, c)
			}
			live.Unlock()
			for _, c := range cs {
				if err := c.Close(); err != nil {
					fmt.Fprintf(os.Stderr, "cluster %s: %v\n", c.Prefix(), err)
				}
			}
			os.Exit(1)
		}()
	})
}
