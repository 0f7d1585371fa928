package topology

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const netnsDir = "/run/netns"

// NetnsPath is the bind mount of a named network namespace, for nsenter --net= or setns.
func NetnsPath(name string) string { return filepath.Join(netnsDir, name) }

func addNetns(ctx context.Context, name string) error {
	_, err := run(ctx, "ip", "netns", "add", name)
	return err
}

func delNetns(ctx context.Context, name string) error {
	_, err := run(ctx, "ip", "netns", "del", name)
	return err
}

// listNetns returns the names of all named network namespaces.
func listNetns() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: %w", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// netnsPids lists the processes inside a named namespace (`ip netns pids` scans /proc).
func netnsPids(ctx context.Context, name string) ([]int, error) {
	out, err := run(ctx, "ip", "netns", "pids", name)
	if err != nil {
		return nil, err
	}
	return parsePids(out)
}

func parsePids(s string) ([]int, error) {
	var pids []int
	for _, f := range strings.Fields(s) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("bad pid %q", f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// setSysctls writes /proc/sys/net values inside the namespace. It goes through nsenter rather than
// `ip netns exec` because the latter remounts /sys; /proc/sys/net follows the writer's netns.
func setSysctls(ctx context.Context, ns string, kv [][2]string) error {
	script := "set -e"
	for _, p := range kv {
		script += fmt.Sprintf("; echo %s > /proc/sys/%s", p[1], strings.ReplaceAll(p[0], ".", "/"))
	}
	_, err := run(ctx, "nsenter", "--net="+NetnsPath(ns), "sh", "-c", script)
	return err
}

// netnsInode identifies a namespace file, so we can prove none of ours is the caller's namespace.
func netnsInode(path string) (uint64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no inode", path)
	}
	return sys.Ino, nil
}
