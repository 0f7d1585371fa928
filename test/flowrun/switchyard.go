package flowrun

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
	"time"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/topology"
)

// AgentArgs are the Switchyard agent's flags for a case in topo; the source flags
// come apart.
func AgentArgs(mode string, c flow.Case, topo *topology.Topology, bpfRoot string) []string {
	args := []string{
		"agent", "--mode=" + mode,
		"--hostname-override=" + c.Node.Name,
		"--healthz-bind-address=127.0.0.1:10256",
		"--metrics-bind-address=127.0.0.1:10249",
		"--cgroup-root=" + topo.NodeCgroup(),
		"--bpf-root=" + bpfRoot,
		"--v=2",
	}
	args = append(args, configArgs(c.Config)...)
	return append(args, "--localhost-nodeports="+strconv.FormatBool(localhostNodePorts(c.Config)))
}

// launchSwitchyard runs the Switchyard agent in the node namespace and cgroup, fed
// from manifest files or the API server, without waiting for it to sync.
func (o Options) launchSwitchyard(ctx context.Context, topo *topology.Topology, c flow.Case, objs flow.Objects) (*Proxy, error) {
	mode := strings.TrimPrefix(o.Proxy, "switchyard-")
	work, err := os.MkdirTemp("", topo.Prefix()+"-switchyard-")
	if err != nil {
		return nil, err
	}
	bpfRoot := "/sys/fs/bpf/" + topo.Prefix() + "-switchyard"
	args := AgentArgs(mode, c, topo, bpfRoot)
	stopSource := func() error { return nil }
	if o.Source == "file" {
		if err := objs.WriteManifests(work); err != nil {
			return nil, errors.Join(err, os.RemoveAll(work))
		}
		args = append(args, "--source=file:"+work)
	} else {
		if stopSource, err = o.API.BridgeIntoNetns(topology.NetnsPath(topo.NodeNS()), apiPortInNode); err != nil {
			return nil, errors.Join(err, os.RemoveAll(work))
		}
		kubeconfig, err := o.API.KubeconfigFor(fmt.Sprintf("https://127.0.0.1:%d", apiPortInNode))
		if err != nil {
			return nil, errors.Join(err, stopSource(), os.RemoveAll(work))
		}
		args = append(args, "--kubeconfig="+kubeconfig)
	}
	logPath := filepath.Join(work, "switchyard.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, errors.Join(err, stopSource(), os.RemoveAll(work))
	}
	cmd := topo.CommandContext(ctx, topo.NodeNS(), o.SwitchyardBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	started := time.Now()
	if err := topo.Start(cmd); err != nil {
		return nil, errors.Join(err, logf.Close(), stopSource(), os.RemoveAll(work))
	}
	stop := func() error {
		sigErr := cmd.Process.Signal(syscall.SIGTERM)
		waitErr := cmd.Wait()
		// The pins outlive the agent by design; cleanup is what removes them.
		// In the node namespace, so the reserved-ports sysctl it releases is the node's.
		_, cleanErr := topo.Run(context.WithoutCancel(ctx), topo.NodeNS(), o.SwitchyardBin, "cleanup", "--bpf-root="+bpfRoot)
		return errors.Join(sigErr, waitErr, cleanErr, logf.Close(), stopSource(), os.RemoveAll(work))
	}
	return &Proxy{Cmd: cmd, Log: logPath, Started: started, stop: stop}, nil
}

// AgentPkg is the Switchyard agent's package.
const AgentPkg = "github.com/switchyard/switchyard/cmd/switchyard"

// BuildAgent builds the Switchyard agent into dir (from anywhere in the module).
func BuildAgent(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "switchyard")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, AgentPkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", AgentPkg, err, out)
	}
	return bin, nil
}
