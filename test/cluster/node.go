package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/process"
)

// node is a Node with what runs it.
type node struct {
	Node
	cgDir      *os.File // the node's cgroup v2 directory, for CLONE_INTO_CGROUP
	holder     *proc
	containerd *proc
	kubelet    *proc
}

// startNode creates the node's v1 cgroups, then starts the holder, containerd (and imports the
// images) and kubelet, all born in the node's cgroup v2 directory.
func (c *Cluster) startNode(ctx context.Context, n *node) error {
	t0 := time.Now()
	for _, d := range []string{"cni/net.d", "cni/ipam", "pod-logs", "kubelet", "containerd"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := createV1(filepath.Base(n.Cgroup)); err != nil {
		return err
	}
	var err error
	if n.cgDir, err = os.Open(n.Cgroup); err != nil {
		return fmt.Errorf("node cgroup: %w", err)
	}
	if err := c.startHolder(ctx, n); err != nil {
		return err
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		return err
	}
	files := map[string]string{
		"containerd.toml":                  containerdConfig(n.Dir, runc, c.opts.PauseImage),
		"cni/net.d/10-switchyard.conflist": cniConfig(n.Dir, n.PodCIDR),
		"kubelet.yaml":                     kubeletConfig(n.Dir, n.IP, n.CgroupRoot),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(n.Dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	containerd, err := exec.LookPath("containerd")
	if err != nil {
		return err
	}
	if n.containerd, err = startProc(n.Name+" containerd", c.logPath(n.Name+"-containerd"),
		c.inNode(n, containerd, "--config", filepath.Join(n.Dir, "containerd.toml"))); err != nil {
		return err
	}
	if err := c.waitContainerd(ctx, n); err != nil {
		return err
	}
	for _, img := range c.opts.Images {
		if err := c.importImage(ctx, n, img); err != nil {
			return err
		}
	}
	c.logf("%s: containerd up, %d images imported after %v", n.Name, len(c.opts.Images), time.Since(t0).Round(time.Millisecond))
	n.kubelet, err = startProc(n.Name+" kubelet", c.logPath(n.Name+"-kubelet"),
		c.inNode(n, filepath.Join(c.opts.BinDir, "kubelet"),
			"--config="+filepath.Join(n.Dir, "kubelet.yaml"),
			"--kubeconfig="+c.nodeCfg,
			"--root-dir="+filepath.Join(n.Dir, "kubelet"),
			"--cert-dir="+filepath.Join(n.Dir, "kubelet", "pki"),
			"--hostname-override="+n.Name,
			"--node-ip="+n.IP,
			"--v=2",
		))
	return err
}

// startHolder starts the process that holds the node's mount namespace and waits until it is set up.
func (c *Cluster) startHolder(ctx context.Context, n *node) error {
	cmd := exec.Command("nsenter", "--net="+n.NetnsPath, "--",
		"unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", holderScript(n.Dir))
	c.bornInNode(n, cmd)
	var err error
	if n.holder, err = startProc(n.Name+" holder", c.logPath(n.Name+"-holder"), cmd); err != nil {
		return err
	}
	// nsenter and unshare exec: the holder keeps the pid of the process started.
	n.HolderPID = n.holder.cmd.Process.Pid
	ready := filepath.Join(n.Dir, "holder.ready")
	return waitUntil(ctx, n.holder, 10*time.Second, func() bool { _, err := os.Stat(ready); return err == nil })
}

// inNode is a command for a daemon of the node: in the holder's mount and network namespaces, born
// in the node's cgroup.
func (c *Cluster) inNode(n *node, name string, args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(n.HolderPID), "-m", "-n", "--", name}, args...)...)
	c.bornInNode(n, cmd)
	return cmd
}

func (c *Cluster) bornInNode(n *node, cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(n.cgDir.Fd())
}

func (c *Cluster) waitContainerd(ctx context.Context, n *node) error {
	return waitUntil(ctx, n.containerd, 30*time.Second, func() bool {
		if _, err := os.Stat(n.ContainerdSocket); err != nil {
			return false
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		cmd := c.inNodeCtx(cctx, n, "ctr", "-a", n.ContainerdSocket, "version")
		return cmd.Run() == nil
	})
}

func (c *Cluster) inNodeCtx(ctx context.Context, n *node, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(n.HolderPID), "-m", "-n", "--", name}, args...)...)
	c.bornInNode(n, cmd)
	cmd.Env = childEnv()
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// importImage streams an archive into the node's containerd (ctr reads it from stdin, so the file
// needs no path the node can see).
func (c *Cluster) importImage(ctx context.Context, n *node, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := c.inNodeCtx(ctx, n, "ctr", "-a", n.ContainerdSocket, "-n", "k8s.io", "images", "import", "-")
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: importing %s: %w: %s", n.Name, path, err, out)
	}
	return nil
}

// waitUntil polls cond until it holds, p exits, ctx ends or timeout passes.
func waitUntil(ctx context.Context, p *proc, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-p.done:
			return p.exitError()
		case <-ctx.Done():
			return fmt.Errorf("%s: %w; last lines of %s:\n%s", p.name, ctx.Err(), p.log, process.TailFile(p.log, 20))
		case <-tick.C:
		}
	}
	return nil
}

// stopNode ends everything of the node: kubelet first (SIGTERM), then every process in the node's
// cgroup tree (containerd, shims, containers, the holder: with it the node's mount namespace and
// every mount in it), then removes the cgroups below the node's v2 directory (the topology removes
// that one) and the node's v1 cgroups.
func (n *node) stop() error {
	var errs []error
	if n.kubelet != nil {
		n.kubelet.stop(5 * time.Second)
	}
	if n.Cgroup != "" {
		errs = append(errs, killTree(n.Cgroup))
	}
	for _, p := range []*proc{n.containerd, n.holder} {
		if p != nil {
			p.kill()
		}
	}
	if n.Cgroup != "" {
		errs = append(errs, removeTree(n.Cgroup, false))
		_, err := removeV1(filepath.Base(n.Cgroup))
		errs = append(errs, err)
	}
	if n.cgDir != nil {
		errs = append(errs, n.cgDir.Close())
	}
	return errors.Join(errs...)
}

// TagImage gives an image every node holds a second name (ctr images tag), as pushing a new tag
// to a registry would: a DaemonSet moved to that name rolls its pods onto the same content.
func (c *Cluster) TagImage(ctx context.Context, ref, newRef string) error {
	for _, n := range c.nodes {
		cmd := c.inNodeCtx(ctx, n, "ctr", "-a", n.ContainerdSocket, "-n", "k8s.io", "images", "tag", "--force", ref, newRef)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: tagging %s as %s: %w: %s", n.Name, ref, newRef, err, out)
		}
	}
	return nil
}
