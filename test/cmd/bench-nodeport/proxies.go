package main

import (
	"context"
	"path/filepath"

	"github.com/switchyard/switchyard/test/controlplane"
	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/flowrun"
	"github.com/switchyard/switchyard/test/topology"
)

// startProxy runs the target's proxy in the node with flowtest's launchers:
// kube-proxy fed through the API server, Switchyard through --source=file.
func startProxy(ctx context.Context, e *env, topo *topology.Topology, c flow.Case, target string) (stop func() error, err error) {
	o := flowrun.Options{Proxy: target, Source: "file"}
	if target == "switchyard-ebpf" {
		if o.SwitchyardBin, err = e.agent(ctx); err != nil {
			return nil, err
		}
	} else {
		o.Source = "apiserver"
		o.KubeProxyBin = filepath.Join(controlplane.BinDir(), "kube-proxy")
		if o.API, err = e.controlPlane(ctx); err != nil {
			return nil, err
		}
	}
	return o.StartProxy(ctx, topo, c)
}
