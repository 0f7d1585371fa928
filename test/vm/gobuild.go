package vm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildPackages builds Go packages (static, CGO_ENABLED=0) into dir from the module that
// holds the working directory, for the guest's `go build` shim: test helpers such as
// test/topology build their helper binaries at run time, and the guest has no toolchain.
func BuildPackages(ctx context.Context, dir string, pkgs []string) (map[string]string, error) {
	out := map[string]string{}
	if len(pkgs) == 0 {
		return out, nil
	}
	goTool, err := lookGo()
	if err != nil {
		return nil, err
	}
	for _, pkg := range pkgs {
		bin := filepath.Join(dir, goBuildName(pkg))
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if _, err := output(cmd); err != nil {
			return nil, err
		}
		out[pkg] = bin
	}
	return out, nil
}

func lookGo() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go"), nil
	}
	return exec.LookPath("/usr/local/go/bin/go")
}
