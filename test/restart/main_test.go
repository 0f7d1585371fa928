package restart

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/bpf"
	"github.com/switchyard/switchyard/test/topology"
)

const bpffs = "/sys/fs/bpf"

// Set by TestMain.
var (
	switchyardBin, echoBin, probeBin string
	unsupported                      error // why the test cannot run here
	buildErr                         error
)

func TestMain(m *testing.M) {
	if os.Getenv(holdEnv) != "" {
		os.Exit(holdMain(os.Args[1:])) // this binary re-executed as the holding client inside a pod
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	unsupported = prerequisites()
	if unsupported == nil {
		dir, err := os.MkdirTemp("", "restart-test-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		buildErr = buildAll(ctx, dir)
		// Only what killed runs left: other packages' topologies may be up right now.
		if removed, err := topology.Cleanup(false); err != nil || len(removed) > 0 {
			fmt.Fprintf(os.Stderr, "restart: removed leftover topologies %v (error: %v)\n", removed, err)
		}
		removeStalePins()
		topology.CloseOnSignal()
	}
	return m.Run()
}

// prerequisites: root, what topologies need, bpffs, the kernel features of the eBPF dataplane, and
// curl (the metrics are read from inside the node namespace).
func prerequisites() error {
	if err := topology.Prerequisites(); err != nil {
		return err
	}
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
	if unsupported != nil {
		msg := fmt.Sprintf("the restart test needs root, ip, nsenter, cgroup v2, curl, bpffs and the eBPF kernel features: %v", unsupported)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
}

// buildAll builds the agent (from the module root) and the echo server and probe.
func buildAll(ctx context.Context, dir string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	switchyardBin = filepath.Join(dir, "switchyard")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", switchyardBin, "./cmd/switchyard")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/switchyard: %w: %s", err, strings.TrimSpace(string(out)))
	}
	echoBin, probeBin, err = topology.BuildBinaries(ctx, dir)
	return err
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

// pinDirRE matches the agent's pin directories in tests (this package's and test/flowrun's):
// /sys/fs/bpf/<prefix>-switchyard.
var pinDirRE = regexp.MustCompile(`^(sy[0-9a-f]{6})-switchyard$`)

// removeStalePins unpins what a killed run left: its topology (and so its node namespace) is gone
// by now, while a live run's is not.
func removeStalePins() {
	ents, _ := os.ReadDir(bpffs)
	for _, e := range ents {
		m := pinDirRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if _, err := os.Stat(topology.NetnsPath(m[1] + "-node")); errors.Is(err, os.ErrNotExist) {
			if err := bpf.Unpin(filepath.Join(bpffs, e.Name())); err != nil {
				fmt.Fprintf(os.Stderr, "restart: stale pins %s: %v\n", e.Name(), err)
			}
		}
	}
}
