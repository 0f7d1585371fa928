package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeCommand returns a command that runs inside the node's mount and network namespaces (nsenter -t
// HOLDER -m -n), born in the node's cgroup: it sees what the node's daemons see (the node's sysfs,
// bpffs, private /run, /var/lib and /var/log; every other path is the host's). The command fails
// to start for an unknown node.
func (c *Cluster) NodeCommand(ctx context.Context, nodeName, name string, args ...string) *exec.Cmd {
	n := c.node(nodeName)
	if n == nil || n.cgDir == nil {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Err = fmt.Errorf("cluster %s: no node %q", c.prefix, nodeName)
		return cmd
	}
	return c.inNodeCtx(ctx, n, name, args...)
}

// ExternalCommand returns a command that runs inside the network namespace of the external client
// with this IP (in the topology's cgroup for external clients).
func (c *Cluster) ExternalCommand(ctx context.Context, ip, name string, args ...string) *exec.Cmd {
	return c.topo.CommandContext(ctx, c.topo.ExternalNS(ip), name, args...)
}

// PodCommand returns a command that runs inside the network namespace of a running pod (its mount
// namespace stays the host's, so name is a host path), born in the cgroup of the pod's node. The
// namespace is found through the pid of one of the pod's running containers, which the runc shim
// records in containerd's state (io.containerd.runtime.v2.task/k8s.io/<id>/init.pid).
func (c *Cluster) PodCommand(ctx context.Context, namespace, pod, name string, args ...string) (*exec.Cmd, error) {
	pid, n, err := c.podPID(ctx, namespace, pod)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/proc/" + strconv.Itoa(pid) + "/ns/net", "--", name}, args...)...)
	c.bornInNode(n, cmd)
	cmd.Env = childEnv()
	return cmd, nil
}

// PodPID returns the host pid of the first running container of the pod (its process lives in the
// pod's namespaces and cgroups: /proc/PID/ns/net is the pod's network namespace).
func (c *Cluster) PodPID(ctx context.Context, namespace, pod string) (int, error) {
	pid, _, err := c.podPID(ctx, namespace, pod)
	return pid, err
}

func (c *Cluster) podPID(ctx context.Context, namespace, pod string) (int, *node, error) {
	p, err := c.Client().CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return 0, nil, err
	}
	n := c.node(p.Spec.NodeName)
	if n == nil {
		return 0, nil, fmt.Errorf("pod %s/%s is on node %q, not one of the cluster's", namespace, pod, p.Spec.NodeName)
	}
	for _, st := range p.Status.ContainerStatuses {
		if st.State.Running == nil {
			continue
		}
		pid, err := n.containerPID(st)
		if err != nil {
			return 0, nil, fmt.Errorf("pod %s/%s: %w", namespace, pod, err)
		}
		return pid, n, nil
	}
	return 0, nil, fmt.Errorf("pod %s/%s has no running container", namespace, pod)
}

func (n *node) containerPID(st v1.ContainerStatus) (int, error) {
	id, ok := strings.CutPrefix(st.ContainerID, "containerd://")
	if !ok || id == "" || strings.ContainsAny(id, "/.") {
		return 0, fmt.Errorf("container %s: unexpected id %q", st.Name, st.ContainerID)
	}
	path := filepath.Join(n.Dir, "containerd", "state", "io.containerd.runtime.v2.task", "k8s.io", id, "init.pid")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("container %s: %w", st.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("container %s: %s: %w", st.Name, path, err)
	}
	// The pid must be alive and the node's: a stale file of an exited container is no answer.
	cg, err := cgroupsOf(pid)
	if err != nil {
		return 0, fmt.Errorf("container %s: pid %d: %w", st.Name, pid, err)
	}
	if !inV2Tree(cg, n.CgroupRoot) {
		return 0, fmt.Errorf("container %s: pid %d is not in %s's cgroup:\n%s", st.Name, pid, n.Name, cg)
	}
	return pid, nil
}

// inV2Tree tells whether the cgroup v2 line of /proc/PID/cgroup contents is root or below it.
func inV2Tree(procCgroup, root string) bool {
	for _, line := range strings.Split(procCgroup, "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p == root || strings.HasPrefix(p, root+"/")
		}
	}
	return false
}

// run executes a management command and returns its combined output; the error names the command
// and carries the output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// command is a command for a root-namespace daemon: its own process group.
func command(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// Output runs cmd and returns its stdout; the error carries the command line and stderr.
func Output(cmd *exec.Cmd) (string, error) {
	var stderr strings.Builder
	if cmd.Stderr == nil {
		cmd.Stderr = &stderr
	}
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || stderr.Len() > 0 {
			return string(out), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return string(out), fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	return string(out), nil
}
