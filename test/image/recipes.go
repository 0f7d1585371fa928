package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/switchyard/switchyard/test/controlplane"
)

// LabelPackages is the image label listing the Debian packages (name=version,
// space-separated, sorted) whose files the image holds.
const LabelPackages = "io.switchyard.debian-packages"

const labelVersion = "org.opencontainers.image.version"

// switchyardSpec: the static agent on top of the tools its modes run.
func (b *Builder) switchyardSpec(ctx context.Context) (Spec, []Package, error) {
	tools, err := b.toolLayers(ctx)
	if err != nil {
		return Spec{}, nil, err
	}
	version, err := b.version(ctx)
	if err != nil {
		return Spec{}, nil, err
	}
	bins, err := b.goBuild(ctx, "-X main.version="+version, "./cmd/switchyard")
	if err != nil {
		return Spec{}, nil, err
	}
	bin, err := NewLayer("switchyard "+version, bins)
	if err != nil {
		return Spec{}, nil, err
	}
	return Spec{
		Ref:        Ref("switchyard"),
		Layers:     []*Layer{tools.agent, bin},
		Entrypoint: []string{"/switchyard"},
		Labels:     map[string]string{LabelPackages: PackageList(tools.agentPkgs), labelVersion: version},
	}, tools.agentPkgs, nil
}

// kubeProxySpec: upstream kube-proxy (test/k8s/build.sh's) where upstream's
// image has it, on the same tools layer as switchyard's plus its own extras.
func (b *Builder) kubeProxySpec(ctx context.Context) (Spec, []Package, error) {
	dir := b.o.K8sBinDir
	if dir == "" {
		dir = controlplane.BinDir()
	}
	data, err := os.ReadFile(filepath.Join(dir, "kube-proxy"))
	if errors.Is(err, fs.ErrNotExist) {
		return Spec{}, nil, fmt.Errorf("kube-proxy image: no kube-proxy in %s: build it with `make controlplane` "+
			"(test/k8s/build.sh) or set SWITCHYARD_K8S_BIN", dir)
	}
	if err != nil {
		return Spec{}, nil, fmt.Errorf("kube-proxy image: %w", err)
	}
	tools, err := b.toolLayers(ctx)
	if err != nil {
		return Spec{}, nil, err
	}
	bin, err := NewLayer("kube-proxy "+controlplane.Version, []File{{Path: "/usr/local/bin/kube-proxy", Mode: 0o755, Data: data}})
	if err != nil {
		return Spec{}, nil, err
	}
	pkgs := sortedPackages(append(append([]Package(nil), tools.agentPkgs...), tools.kubeProxyPkgs...))
	return Spec{
		Ref:        Ref("kube-proxy"),
		Layers:     []*Layer{tools.agent, tools.kubeProxy, bin},
		Entrypoint: []string{"/usr/local/bin/kube-proxy"},
		Labels:     map[string]string{LabelPackages: PackageList(pkgs), labelVersion: controlplane.Version},
	}, pkgs, nil
}

// testSpec: the test pods' programs, static, entrypoint /echo.
func (b *Builder) testSpec(ctx context.Context) (Spec, []Package, error) {
	bins, err := b.goBuild(ctx, "", "./test/cmd/echo", "./test/cmd/probe", "./test/cmd/loadgen")
	if err != nil {
		return Spec{}, nil, err
	}
	l, err := NewLayer("test programs: echo, probe, loadgen", bins)
	if err != nil {
		return Spec{}, nil, err
	}
	return Spec{Ref: Ref("test"), Layers: []*Layer{l}, Entrypoint: []string{"/echo"}}, nil, nil
}

// pauseSpec: the pod sandbox's process (test/cmd/pause).
func (b *Builder) pauseSpec(ctx context.Context) (Spec, []Package, error) {
	bins, err := b.goBuild(ctx, "", "./test/cmd/pause")
	if err != nil {
		return Spec{}, nil, err
	}
	l, err := NewLayer("pause", bins)
	if err != nil {
		return Spec{}, nil, err
	}
	return Spec{Ref: Ref("pause"), Layers: []*Layer{l}, Entrypoint: []string{"/pause"}}, nil, nil
}
