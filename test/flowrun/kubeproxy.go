package flowrun

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/topology"
)

// apiPortInNode is where the API server appears inside the node namespace.
const apiPortInNode = 6443

// kubeProxyArgs are upstream kube-proxy's flags for a case.
func kubeProxyArgs(mode string, c flow.Case, kubeconfig string) []string {
	args := []string{
		"--proxy-mode=" + mode,
		"--kubeconfig=" + kubeconfig,
		"--hostname-override=" + c.Node.Name,
		"--healthz-bind-address=127.0.0.1:10256",
		"--metrics-bind-address=127.0.0.1:10249",
		// Conntrack limits are global to the machine, not the namespace: leave them.
		"--conntrack-max-per-core=0",
		"--v=2",
	}
	args = append(args, configArgs(c.Config)...)
	if mode == "iptables" {
		args = append(args, "--iptables-localhost-nodeports="+strconv.FormatBool(localhostNodePorts(c.Config)))
	}
	return args
}

// configArgs are the flags of a case's config that kube-proxy and Switchyard
// share, by name and meaning.
func configArgs(cfg flow.Config) []string {
	var args []string
	if cfg.ClusterCIDR != "" {
		args = append(args, "--cluster-cidr="+cfg.ClusterCIDR)
	}
	if len(cfg.NodePortAddresses) > 0 {
		args = append(args, "--nodeport-addresses="+strings.Join(cfg.NodePortAddresses, ","))
	}
	if cfg.MasqueradeAll {
		args = append(args, "--masquerade-all")
	}
	return args
}

// localhostNodePorts is the case's setting, kube-proxy's default (true) when unset.
func localhostNodePorts(cfg flow.Config) bool {
	return cfg.LocalhostNodePorts == nil || *cfg.LocalhostNodePorts
}

// launchKubeProxy runs upstream kube-proxy in the node namespace (and cgroup),
// fed from the API server through a bridge, without waiting for it to sync.
func (o Options) launchKubeProxy(ctx context.Context, topo *topology.Topology, c flow.Case) (*Proxy, error) {
	mode := strings.TrimPrefix(o.Proxy, "kube-proxy-")
	stopBridge, err := o.API.BridgeIntoNetns(topology.NetnsPath(topo.NodeNS()), apiPortInNode)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := o.API.KubeconfigFor(fmt.Sprintf("https://127.0.0.1:%d", apiPortInNode))
	if err != nil {
		return nil, errors.Join(err, stopBridge())
	}
	logPath := filepath.Join(os.TempDir(), topo.Prefix()+"-kube-proxy.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, errors.Join(err, stopBridge())
	}
	cmd := topo.CommandContext(ctx, topo.NodeNS(), o.KubeProxyBin, kubeProxyArgs(mode, c, kubeconfig)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	started := time.Now()
	if err := topo.Start(cmd); err != nil {
		return nil, errors.Join(err, logf.Close(), stopBridge())
	}
	stop := func() error {
		sigErr := cmd.Process.Signal(syscall.SIGTERM)
		waitErr := cmd.Wait()
		var exit *exec.ExitError
		if errors.As(waitErr, &exit) {
			waitErr = nil // it exits non-zero on SIGTERM
		}
		rmErr := os.Remove(logPath)
		return errors.Join(sigErr, waitErr, logf.Close(), stopBridge(), rmErr)
	}
	return &Proxy{Cmd: cmd, Log: logPath, Started: started, stop: stop}, nil
}

var lastSync = regexp.MustCompile(`(?m)^kubeproxy_sync_proxy_rules_last_timestamp_seconds(?:{ip_family="(IPv[46])"})? ([0-9.e+]+)$`)

// synced reports whether the metrics show a sync for every family the node has
// (kube-proxy has a proxier per family, and the second may sync later), or, with
// no families, any sync.
func synced(metrics string, families []string) bool {
	done := map[string]bool{}
	for _, m := range lastSync.FindAllStringSubmatch(metrics, -1) {
		if v, err := strconv.ParseFloat(m[2], 64); err == nil && v > 0 {
			done[m[1]] = true
		}
	}
	if done[""] { // a kube-proxy without per-family labels
		return true
	}
	for _, f := range families {
		if !done[f] {
			return false
		}
	}
	return len(families) > 0 || len(done) > 0
}

// exited reports whether cmd's process has ended, without reaping it.
func exited(cmd *exec.Cmd) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err == nil && info.Signo != 0
}

// nodeFamilies are the families of the node's addresses, as kube-proxy names them.
func nodeFamilies(c flow.Case) []string {
	var out []string
	for _, s := range c.Node.IPs {
		f := "IPv4"
		if netip.MustParseAddr(s).Is6() {
			f = "IPv6"
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// WaitSynced polls the proxy's metrics (kube-proxy's or Switchyard's, which
// share the name) inside the node namespace until every family has synced; with
// no families, until any sync. It gives up early when cmd, the proxy, exits.
func WaitSynced(ctx context.Context, topo *topology.Topology, families []string, cmd *exec.Cmd) error {
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if cmd != nil && exited(cmd) {
			return errors.New("exited before its first sync")
		}
		out, err := topo.Run(ctx, topo.NodeNS(), "curl", "-s", "--max-time", "2", "http://127.0.0.1:10249/metrics")
		if err == nil && synced(out, families) {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("no sync of %v within 60s (last metrics error: %v)", families, last)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
