package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/bpf"
	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/iptables"
	"github.com/switchyard/switchyard/ipvs"
	"github.com/switchyard/switchyard/netfilter"
)

// modeChoice is the dataplane the agent runs, and why when auto fell back.
type modeChoice struct {
	requested, mode string
	fallback        string // why auto did not pick ebpf; empty otherwise
}

// resolveMode turns auto into a concrete mode, saying why on log: eBPF when the
// kernel has everything the eBPF dataplane needs (probe), else iptables.
func resolveMode(mode string, probe func() error, log io.Writer) modeChoice {
	c := modeChoice{requested: mode, mode: mode}
	if mode != "auto" {
		return c
	}
	if err := probe(); err != nil {
		fmt.Fprintf(log, "mode auto: eBPF is not usable, falling back to iptables: %v\n", err)
		c.mode, c.fallback = "iptables", err.Error()
		return c
	}
	fmt.Fprintln(log, "mode auto: the kernel supports everything the eBPF dataplane needs; using ebpf")
	c.mode = "ebpf"
	return c
}

// ebpfProbe tells auto whether eBPF mode can do what this configuration asks:
// the kernel's features, and what the eBPF dataplane cannot do yet.
func ebpfProbe(cfg *agentConfig, kernel func() error) func() error {
	return func() error {
		if cfg.model.MasqueradeAll {
			return errEBPFMasqueradeAll
		}
		return kernel()
	}
}

// register exports the choice, so that a fleet's operators can find the nodes
// where auto fell back, and why, without reading logs.
func (c modeChoice) register(r prometheus.Registerer) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "switchyard_dataplane_info",
		Help: "The dataplane this agent runs (1): the mode, the --mode asked for, and why auto fell back from ebpf (empty when it did not).",
	}, []string{"mode", "requested", "fallback_reason"})
	g.WithLabelValues(c.mode, c.requested, c.fallback).Set(1)
	r.MustRegister(g)
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
			MaxServices: cfg.bpfMaps[0], MaxBackends: cfg.bpfMaps[1], CTMax: cfg.bpfMaps[2], NodePortRange: cfg.model.NodePortRange,
			Devices: cfg.devices, TCMode: cfg.tcMode, ClusterCIDRs: cfg.model.ClusterCIDRs})
	case "iptables":
		return newIPTablesBackend(cfg, metrics)
	case "ipvs":
		return newIPVSBackend(cfg)
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
	nf, err := newNetfilter(cfg)
	if err != nil {
		return nil, err
	}
	return iptables.NewBackend(iptables.BackendConfig{Model: cfg.model, Conntrack: nf.ct, Sysctl: netfilter.ProcSysctl{Root: filepath.Join(cfg.procfs, "sys")},
		MasqueradeBit: cfg.masqBit, Metrics: metrics, Families: nf.families, Restorers: nf.restorers, Jumpers: nf.jumpers})
}

// newIPVSBackend builds the IPVS dataplane; a kernel without IPVS is an error
// at start, with what to do instead.
func newIPVSBackend(cfg *agentConfig) (dataplane.Backend, error) {
	h, err := ipvs.NewKernelIPVS("")
	if err != nil {
		return nil, err
	}
	links, err := ipvs.NewKernelLinks("")
	if err != nil {
		return nil, err
	}
	nf, err := newNetfilter(cfg)
	if err != nil {
		return nil, err
	}
	return ipvs.NewBackend(ipvs.Config{
		Options: ipvs.Options{Model: cfg.model, Scheduler: cfg.ipvsScheduler, MasqueradeBit: cfg.masqBit},
		IPVS:    h, Links: links, Records: ipvs.FileRecords{Path: ipvs.DefaultRecordsPath},
		Families: nf.families, Restorers: nf.restorers, Jumpers: nf.jumpers,
		Sysctl: netfilter.ProcSysctl{Root: filepath.Join(cfg.procfs, "sys")}, Conntrack: nf.ct,
	})
}

// netfilterParts are the kernel boundaries the iptables and IPVS modes share.
type netfilterParts struct {
	families  []dataplane.Family
	restorers map[dataplane.Family]netfilter.Restorer
	jumpers   map[dataplane.Family]netfilter.Jumper
	ct        netfilter.Conntrack
}

// newNetfilter opens both families with the iptables binaries the node's rules
// are in (or --iptables-variant).
func newNetfilter(cfg *agentConfig) (*netfilterParts, error) {
	v, err := cfg.iptVariant.Resolve(nil)
	if err != nil {
		return nil, err
	}
	klog.InfoS("Using the iptables binaries", "variant", v)
	ct, err := netfilter.NewConntrack(nil)
	if err != nil {
		return nil, err
	}
	nf := &netfilterParts{ct: ct, restorers: map[dataplane.Family]netfilter.Restorer{}, jumpers: map[dataplane.Family]netfilter.Jumper{}}
	for _, f := range []dataplane.Family{dataplane.IPv4, dataplane.IPv6} {
		j, err := netfilter.NewJumper(f, v)
		if err != nil {
			return nil, err
		}
		nf.families = append(nf.families, f)
		nf.restorers[f], nf.jumpers[f] = netfilter.NewRestorer(f, v, nil), j
	}
	return nf, nil
}

// cleanup removes what any dataplane installed: the eBPF pins (which detaches the
// programs; tc programs attached without links are removed from every device of
// this network namespace), eBPF mode's NAT hold, the iptables rules of either
// variant, and the reserved NodePort range.
func cleanup(bpfRoot, procfs string, nodePorts dataplane.PortRange, drain time.Duration) error {
	if drain > 0 {
		if err := drainFlows(bpfRoot, drain, time.Second); err != nil {
			return err
		}
	}
	// IPVS first: its rules jump to chains iptables' cleanup would otherwise refuse to delete.
	var ipvsErr error
	if ipvs.Supported() == nil {
		ipvsErr = ipvs.CleanupAll(nodePorts, ipvs.FileRecords{Path: ipvs.DefaultRecordsPath})
	}
	return errors.Join(bpf.UnpinTC(bpfRoot), bpf.Unpin(bpfRoot), netfilter.ReleaseNAT(context.Background(), nil), ipvsErr, iptables.CleanupAll(),
		updateReservedPorts(reservedPortsPath(procfs), nodePorts, false))
}

// drainFlows asks the pinned tc programs to start no new flow, then waits until the connections
// from outside they carry are over or timeout has passed: the ones still open then are cut when
// the programs go (kube-proxy's conntrack never saw them).
func drainFlows(pinDir string, timeout, poll time.Duration) error {
	ok, err := bpf.Drain(pinDir)
	if err != nil || !ok {
		return err
	}
	holdFlowPorts(pinDir, timeout+time.Minute)
	deadline := time.Now().Add(timeout)
	for {
		n, err := bpf.LiveFlows(pinDir)
		if err != nil {
			return err
		}
		if n == 0 {
			klog.InfoS("Drained: no connection from outside left on the tc programs")
			return nil
		}
		if time.Now().After(deadline) {
			klog.InfoS("Drain timed out: these connections from outside are cut with the tc programs", "flows", n, "timeout", timeout)
			return nil
		}
		time.Sleep(poll)
	}
}

// holdFlowPorts shows conntrack the ports the draining flows hold (bpf.HoldFlowPorts), so that
// kube-proxy's masquerade does not give them to its new connections. A failure is logged, not
// fatal: the rollback goes on, with the small risk the hold was for.
func holdFlowPorts(pinDir string, ttl time.Duration) {
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err == nil {
		defer h.Close()
		var n int
		n, err = bpf.HoldFlowPorts(pinDir, h, ttl)
		klog.InfoS("Showed conntrack the ports of the flows draining", "flows", n)
	}
	if err != nil {
		klog.ErrorS(err, "Showing conntrack the ports of the flows draining: kube-proxy may give one of them to a new connection")
	}
}
