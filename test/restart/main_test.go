package restart

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/bpf"
	"github.com/switchyard/switchyard/test/topology"
)

const bpffs = "/sys/fs/bpf"

// Set by TestMain: the helper binaries and the agent, or why the test cannot run.
var (
	support       *topology.Support
	switchyardBin string
	agentErr      error
)

func TestMain(m *testing.M) {
	if os.Getenv(holdEnv) != "" {
		os.Exit(holdMain(os.Args[1:])) // this binary re-executed as the holding client inside a pod
	}
	support = topology.PrepareTests("root, ip, nsenter, cgroup v2, curl, bpffs and the eBPF kernel features", prerequisites)
	if support.Unsupported == nil && support.BuildErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		switchyardBin, agentErr = buildAgent(ctx, support.Dir())
		cancel()
	}
	code := m.Run()
	if err := support.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
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

// buildAgent builds the agent from the module root into dir.
func buildAgent(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "switchyard")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/switchyard")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/switchyard: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}

// moduleRoot walks up from the working directory to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
