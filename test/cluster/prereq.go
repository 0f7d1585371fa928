package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchyard/switchyard/test/controlplane"
	"github.com/switchyard/switchyard/test/process"
	"github.com/switchyard/switchyard/test/topology"
)

// Binaries are the Kubernetes programs a cluster needs in its BinDir (test/k8s/build.sh builds them).
var Binaries = []string{"etcd", "kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler"}

// Tools are the programs a cluster needs on PATH (test/cluster/prereqs.sh installs the Debian
// packages containerd, runc and containernetworking-plugins; the rest come with test/prereqs.sh).
var Tools = []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "socat", "nsenter", "unshare", "mount", "ip"}

// cniBinDir holds the CNI plugins (Debian's containernetworking-plugins).
const cniBinDir = "/usr/lib/cni"

var cniPlugins = []string{"bridge", "host-local", "loopback"}

// Prerequisites tells why a cluster cannot run here (nil if it can): root, the topology's needs, the
// hybrid cgroup layout, the Kubernetes binaries in binDir (default controlplane.BinDir()), the tools
// and the CNI plugins.
func Prerequisites(binDir string) error {
	if binDir == "" {
		binDir = controlplane.BinDir()
	}
	errs := []error{topology.Prerequisites(), hybridLayout()}
	var missing []string
	for _, b := range Binaries {
		st, err := os.Stat(filepath.Join(binDir, b))
		if err != nil || st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("Kubernetes binaries %v not in %s: build them with `make controlplane` "+
			"(test/k8s/build.sh) or point SWITCHYARD_K8S_BIN at them", missing, binDir))
	}
	missing = nil
	for _, t := range Tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	for _, p := range cniPlugins {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			missing = append(missing, filepath.Join(cniBinDir, p))
		}
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("missing %v: run test/cluster/prereqs.sh (containerd, runc, "+
			"containernetworking-plugins) and test/prereqs.sh", missing))
	}
	return errors.Join(errs...)
}

// Require skips the test when a cluster cannot run here, or fails it under CI=true, where a missing
// prerequisite is a broken machine.
func Require(t testing.TB) {
	t.Helper()
	if err := Prerequisites(""); err != nil {
		msg := fmt.Sprintf("test/cluster needs: %v", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// StartForTest is Require, then Start with opts, with Close registered in t.Cleanup. When the test
// failed, the cleanup logs the tails of kubelet's, containerd's, the controllers' and the API
// server's logs first.
func StartForTest(t testing.TB, opts Options) *Cluster {
	t.Helper()
	Require(t)
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, log := range c.Logs() {
				t.Logf("%s:\n%s", log, process.TailFile(log, 40))
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("closing cluster %s: %v", c.Prefix(), err)
		}
	})
	return c
}
