package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/bpf"
	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/iptables"
	"github.com/switchyard/switchyard/netfilter"
)

// resolveMode turns auto into a concrete mode, saying why on log: eBPF when the
// kernel has everything the eBPF dataplane needs (probe), else iptables.
func resolveMode(mode string, probe func() error, log io.Writer) string {
	if mode != "auto" {
		return mode
	}
	if err := probe(); err != nil {
		fmt.Fprintf(log, "mode auto: eBPF is not usable, falling back to iptables: %v\n", err)
		return "iptables"
	}
	fmt.Fprintln(log, "mode auto: the kernel supports everything the eBPF dataplane needs; using ebpf")
	return "ebpf"
}

// newBackend builds the backend of a concrete mode.
func newBackend(mode string, cfg *agentConfig, out io.Writer, metrics prometheus.Registerer) (dataplane.Backend, error) {
	switch mode {
	case "print":
		return dataplane.NewPrintBackend(out), nil
	case "ebpf":
		cg := cfg.cgroupRoot
		if cg == "" {
			var err error
			if cg, err = cgroupV2Root(); err != nil {
				return nil, err
			}
		}
		return bpf.NewBackend(bpf.Config{PinDir: cfg.bpfRoot, CgroupPath: cg, Metrics: metrics,
			MaxServices: cfg.bpfMaps[0], MaxBackends: cfg.bpfMaps[1],
			Devices: cfg.devices, TCMode: cfg.tcMode, ClusterCIDRs: cfg.model.ClusterCIDRs})
	case "iptables":
		return newIPTablesBackend(cfg, metrics)
	}
	return nil, usageError{fmt.Errorf("--mode: the %s dataplane is not built yet; this release has: %s", mode, strings.Join(builtList(), ", "))}
}

func builtList() []string {
	var out []string
	for _, m := range knownModes {
		if builtModes[m] {
			out = append(out, m)
		}
	}
	return out
}

// cgroupV2Root finds the cgroup v2 mount: /sys/fs/cgroup on a unified host,
// /sys/fs/cgroup/unified on a hybrid one; it mounts one when there is none.
func cgroupV2Root() (string, error) {
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if _, err := os.Stat(filepath.Join(dir, "cgroup.controllers")); err == nil {
			return dir, nil
		}
	}
	dir := "/run/switchyard/cgroupv2"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := unix.Mount("none", dir, "cgroup2", 0, ""); err != nil {
		return "", fmt.Errorf("no cgroup v2 mount found, and mounting one at %s failed: %w", dir, err)
	}
	return dir, nil
}

// newIPTablesBackend builds the iptables dataplane for both families, with the
// iptables binaries the node's rules are in (or --iptables-variant).
func newIPTablesBackend(cfg *agentConfig, metrics prometheus.Registerer) (dataplane.Backend, error) {
	v, err := cfg.iptVariant.Resolve(nil)
	if err != nil {
		return nil, err
	}
	klog.InfoS("Using the iptables binaries", "variant", v)
	ct, err := netfilter.NewConntrack(nil)
	if err != nil {
		return nil, err
	}
	bc := iptables.BackendConfig{Model: cfg.model, Conntrack: ct, Sysctl: netfilter.ProcSysctl{}, MasqueradeBit: cfg.masqBit, Metrics: metrics,
		Restorers: map[dataplane.Family]netfilter.Restorer{}, Jumpers: map[dataplane.Family]netfilter.Jumper{}}
	for _, f := range []dataplane.Family{dataplane.IPv4, dataplane.IPv6} {
		j, err := netfilter.NewJumper(f, v)
		if err != nil {
			return nil, err
		}
		bc.Families = append(bc.Families, f)
		bc.Restorers[f], bc.Jumpers[f] = netfilter.NewRestorer(f, v, nil), j
	}
	return iptables.NewBackend(bc)
}

// cleanup removes what any dataplane installed: the eBPF pins (which detaches the
// programs; tc programs attached without links are removed from every device of
// this network namespace), the iptables rules of either variant, and the reserved
// NodePort range.
func cleanup(bpfRoot string, nodePorts dataplane.PortRange) error {
	return errors.Join(bpf.UnpinTC(bpfRoot), bpf.Unpin(bpfRoot), iptables.CleanupAll(),
		updateReservedPorts(reservedPortsPath, nodePorts, false))
}
