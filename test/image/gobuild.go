package image

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// goBuild builds the main packages (paths relative to the module root, e.g.
// ./cmd/switchyard) static for linux/amd64 and returns them as files at
// /<name>. -trimpath, -buildvcs=false and stripped symbols keep the binaries
// the same from one checkout, directory or machine to the next.
func (b *Builder) goBuild(ctx context.Context, ldflags string, pkgs ...string) ([]File, error) {
	root, err := b.root(ctx)
	if err != nil {
		return nil, err
	}
	out, err := os.MkdirTemp("", "switchyard-image-bin-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(out)
	b.logf("go build %s", strings.Join(pkgs, " "))
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", strings.TrimSpace("-s -w " + ldflags), "-o", out + "/"}
	cmd := exec.CommandContext(ctx, goTool(), append(args, pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build %s: %w: %s", strings.Join(pkgs, " "), err, strings.TrimSpace(stderr.String()))
	}
	var files []File
	for _, p := range pkgs {
		name := path.Base(p)
		data, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			return nil, fmt.Errorf("go build %s: %w", p, err)
		}
		files = append(files, File{Path: "/" + name, Mode: 0o755, Data: data})
	}
	return files, nil
}

// goTool is $GO (as the Makefile passes it) or go.
func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// root is Options.Root, or the directory of the go.mod `go env GOMOD` finds
// from the working directory.
func (b *Builder) root(ctx context.Context) (string, error) {
	if b.o.Root != "" {
		return b.o.Root, nil
	}
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the Switchyard module (go env GOMOD: %q): run from the repository or set Options.Root", mod)
	}
	return filepath.Dir(mod), nil
}

// version is Options.Version, else what the Makefile's VERSION would be.
func (b *Builder) version(ctx context.Context) (string, error) {
	if b.o.Version != "" {
		return b.o.Version, nil
	}
	root, err := b.root(ctx)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v, nil
	}
	return "dev", nil // not a git checkout (a source tarball): as the Makefile's fallback
}

// sortedPackages sorts by name and drops repeats.
func sortedPackages(pkgs []Package) []Package {
	out := slices.Clone(pkgs)
	slices.SortFunc(out, func(a, b Package) int { return strings.Compare(a.Name, b.Name) })
	return slices.CompactFunc(out, func(a, b Package) bool { return a.Name == b.Name })
}
