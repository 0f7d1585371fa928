package topology

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// markerRE matches the namespaces and cgroups this package creates; group 1 is the run prefix.
var markerRE = regexp.MustCompile(`^(sy[0-9a-f]{6})-`)

// Close kills and reaps every process the topology started, then deletes its namespaces, cgroups and
// bpffs pins (/sys/fs/bpf/<prefix>-*), killing whatever else still runs in them. It is safe to call
// more than once.
func (t *Topology) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	procs, cgroups := t.procs, t.cgroups
	t.mu.Unlock()
	defer unregister(t)
	var errs []error
	// The cgroups first: that also stops what our processes forked, which could keep their output
	// pipes open and Wait from returning.
	for _, cg := range cgroups {
		errs = append(errs, killCgroup(cg.path))
	}
	for _, cmd := range procs {
		// Errors only say the process had already exited or been waited for; its exit status is
		// not ours to judge. Waiting matters: PID 1 reaps orphans slowly.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	for _, cg := range cgroups {
		if err := cg.dir.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close cgroup fd: %w", err))
		}
	}
	// By pattern rather than by our records, so a half-finished step leaves nothing either.
	_, err := removeMatching(func(name string) bool { return strings.HasPrefix(name, t.Prefix()+"-") })
	errs = append(errs, err, releasePrefix(t.Prefix()))
	return errors.Join(errs...)
}

// CleanupPrefix removes every namespace, cgroup and bpffs pin directory whose name starts with prefix (which must start
// with "sy", this package's marker), after killing the processes in them. It returns what it removed.
// Use it for the leftovers of one run that was not closed.
func CleanupPrefix(prefix string) ([]string, error) {
	if !strings.HasPrefix(prefix, "sy") {
		return nil, fmt.Errorf("cleanup prefix %q: only names starting with \"sy\" are ours", prefix)
	}
	removed, err := removeMatching(func(name string) bool {
		return markerRE.MatchString(name) && strings.HasPrefix(name, prefix)
	})
	owners, oerr := ownerPrefixes()
	for _, p := range owners {
		if strings.HasPrefix(p+"-", prefix) {
			oerr = errors.Join(oerr, releasePrefix(p))
		}
	}
	return removed, errors.Join(err, oerr)
}

// Cleanup removes what this package left behind: with all, everything carrying its marker (runs in
// progress included); without, only the runs whose owner process is gone (safe while tests run).
func Cleanup(all bool) ([]string, error) {
	prefixes, err := leftoverPrefixes()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, p := range prefixes {
		if !all && ownerAlive(p) {
			continue
		}
		r, err := CleanupPrefix(p + "-")
		removed = append(removed, r...)
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// leftoverPrefixes lists the run prefixes found in namespace, cgroup and owner-file names.
func leftoverPrefixes() ([]string, error) {
	names, err := ourNames()
	if err != nil {
		return nil, err
	}
	owners, err := ownerPrefixes()
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, n := range names {
		set[markerRE.FindStringSubmatch(n)[1]] = true
	}
	for _, p := range owners {
		set[p] = true
	}
	var out []string
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// ourNames lists every namespace and cgroup name carrying the marker.
func ourNames() ([]string, error) {
	ns, err := listNetns()
	if err != nil {
		return nil, err
	}
	var cgs []string
	if mount, err := cgroupMount(); err == nil {
		if cgs, err = listCgroups(mount); err != nil {
			return nil, err
		}
	}
	pins, err := listPins()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range append(append(ns, cgs...), pins...) {
		if markerRE.MatchString(n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// removeMatching kills the processes in matching cgroups and namespaces, deletes the namespaces,
// then removes the cgroups (which needs the processes gone). Entries are "netns NAME" and "cgroup PATH".
func removeMatching(match func(string) bool) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var removed []string
	var errs []error
	var cgroups []string
	if mount, err := cgroupMount(); err == nil {
		names, err := listCgroups(mount)
		errs = append(errs, err)
		for _, n := range names {
			if match(n) {
				path := filepath.Join(mount, n)
				cgroups = append(cgroups, path)
				errs = append(errs, killCgroup(path))
			}
		}
	}
	names, err := listNetns()
	errs = append(errs, err)
	for _, n := range names {
		if !match(n) {
			continue
		}
		pids, err := netnsPids(ctx, n)
		errs = append(errs, err, killPids(pids))
		if err := delNetns(ctx, n); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "netns "+n)
	}
	for _, path := range cgroups {
		if err := removeCgroup(path); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "cgroup "+path)
	}
	pins, err := listPins()
	errs = append(errs, err)
	for _, n := range pins {
		if !match(n) {
			continue
		}
		// Removing a pin detaches its link and frees its map once nothing else holds them.
		if err := os.RemoveAll(filepath.Join(bpffsDir, n)); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "bpffs pins "+filepath.Join(bpffsDir, n))
	}
	return removed, errors.Join(errs...)
}

// bpffsDir is where tests pin BPF objects, in directories named with the run prefix.
const bpffsDir = "/sys/fs/bpf"

// listPins lists the entries of bpffsDir (none when bpffs is not mounted).
func listPins() ([]string, error) {
	ents, err := os.ReadDir(bpffsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}
