package e2e

import (
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// checkSocketHooks: in eBPF mode every node's own cgroup has the connect4 hook, and
// the cgroup v2 root, where every process of the machine lives, has none.
func (e *env) checkSocketHooks() error {
	nodes := e.c.Nodes()
	for _, n := range nodes {
		if c, err := connectHooks(n.Cgroup); err != nil || c == 0 {
			return fmt.Errorf("node %s: %d connect4 programs on its cgroup %s (%v)", n.Name, c, n.Cgroup, err)
		}
	}
	root := filepath.Dir(nodes[0].Cgroup)
	if c, err := connectHooks(root); err != nil || c != 0 {
		return fmt.Errorf("%d connect4 programs on the cgroup v2 root %s (%v): an agent attached outside its node", c, root, err)
	}
	return nil
}

// connectHooks counts the connect4 programs attached to the cgroup itself.
func connectHooks(cgroup string) (int, error) {
	fd, err := unix.Open(cgroup, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	q, err := link.QueryPrograms(link.QueryOptions{Target: fd, Attach: ebpf.AttachCGroupInet4Connect})
	if err != nil {
		return 0, err
	}
	return len(q.Programs), nil
}
