package topology

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Prerequisites tells why topologies cannot be built here (nil if they can): they need root, the ip
// and nsenter tools and a cgroup v2 hierarchy.
func Prerequisites() error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("not root"))
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			errs = append(errs, fmt.Errorf("no %s tool: %w", tool, err))
		}
	}
	if _, err := cgroupMount(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Module paths of the helper programs.
const (
	EchoPkg  = "github.com/switchyard/switchyard/test/cmd/echo"
	ProbePkg = "github.com/switchyard/switchyard/test/cmd/probe"
)

// BuildBinaries compiles the echo server and the probe into dir (call it from TestMain, with the
// working directory inside the module) and returns their paths.
func BuildBinaries(ctx context.Context, dir string) (echo, probe string, err error) {
	echo, probe = filepath.Join(dir, "echo"), filepath.Join(dir, "probe")
	for _, b := range [][2]string{{echo, EchoPkg}, {probe, ProbePkg}} {
		if _, err := run(ctx, "go", "build", "-o", b[0], b[1]); err != nil {
			return "", "", err
		}
	}
	return echo, probe, nil
}
