package restart

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchyard/switchyard/bpf"
	"github.com/switchyard/switchyard/test/flowrun"
	"github.com/switchyard/switchyard/test/topology"
)

const (
	bpffs      = "/sys/fs/bpf"
	loadgenPkg = "github.com/switchyard/switchyard/test/cmd/loadgen"
)

// Set by TestMain: the helper binaries and the agent, or why the test cannot run.
var (
	support       *topology.Support
	switchyardBin string
	agentErr      error
	loadgenBin    string // test/cmd/loadgen
	loadgenErr    error
)

func TestMain(m *testing.M) {
	if os.Getenv(holdEnv) != "" {
		os.Exit(holdMain(os.Args[1:])) // this binary re-executed as the holding client inside a pod
	}
	support = topology.PrepareTests("root, ip, nsenter, cgroup v2, curl, bpffs and the eBPF kernel features", prerequisites)
	if support.Unsupported == nil && support.BuildErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		switchyardBin, agentErr = flowrun.BuildAgent(ctx, support.Dir())
		loadgenBin = filepath.Join(support.Dir(), "loadgen")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", loadgenBin, loadgenPkg).CombinedOutput(); err != nil {
			loadgenErr = fmt.Errorf("go build %s: %w\n%s", loadgenPkg, err, out)
		}
		cancel()
	}
	os.Exit(support.Run(m))
}

// prerequisites: besides what topologies need, bpffs, the kernel features of the
// eBPF dataplane, and curl (the metrics are read from inside the node namespace).
func prerequisites() error {
	if _, err := exec.LookPath("curl"); err != nil {
		return fmt.Errorf("no curl: %w", err)
	}
	if err := bpf.MountBPFFS(bpffs); err != nil {
		return err
	}
	return bpf.Probe()
}

func requirePrereqs(t *testing.T) {
	t.Helper()
	support.Require(t)
	if agentErr != nil {
		t.Fatalf("building the agent: %v", agentErr)
	}
}
