package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/switchyard/switchyard/bpf"
	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// Modes the agent knows. Only the ones in builtModes can run today.
var (
	knownModes = []string{"auto", "ebpf", "iptables", "ipvs", "print"}
	builtModes = map[string]bool{"print": true, "ebpf": true, "iptables": true, "ipvs": true}
)

const defaultBPFRoot = "/sys/fs/bpf/switchyard"

// defaultProcfs is where the agent finds the sysctls it sets (under sys/net). A
// container that is not privileged has /proc/sys read-only, so the DaemonSet
// mounts the node's /proc/sys/net at /host/proc/sys/net and passes --procfs=/host/proc
// (Cilium's flag of the same name and meaning). The files there belong to the
// network namespace of whoever opens them: the node's, with hostNetwork.
const defaultProcfs = "/proc"

const procfsHelp = "Where the proc filesystem whose sys/net sysctls the agent sets is mounted: /proc, or e.g. /host/proc in a container whose own /proc/sys is read-only."

// minCT and maxCT bound --bpf-ct-max: two entries a connection in each map,
// ~150 bytes an entry; an LRU map hands out free entries to each CPU in batches
// of 128, and a smaller one could refuse a CPU while others hold the rest.
const minCT, maxCT = 1024, 1 << 24

// options are the agent's flags, named and defaulted like kube-proxy's.
type options struct {
	kubeconfig         string
	hostnameOverride   string
	mode               string
	clusterCIDR        string
	nodePortAddresses  []string
	localhostNodePorts bool
	masqueradeAll      bool
	healthzBindAddress string
	metricsBindAddress string
	statusBindAddress  string
	syncPeriod         time.Duration
	minSyncPeriod      time.Duration
	configFile         string
	source             string
	nodePortRange      string
	once               bool
	bpfRoot            string
	cgroupRoot         string
	procfs             string
	bpfMaxServices     uint32
	bpfMaxBackends     uint32
	bpfCTMax           uint32
	devices            []string
	tcAttach           string
	iptablesVariant    string
	masqueradeBit      int32
	ipvsScheduler      string

	flags *pflag.FlagSet
}

func newOptions() *options {
	return &options{
		mode:               "auto",
		localhostNodePorts: true,
		healthzBindAddress: "0.0.0.0:10256",
		metricsBindAddress: "127.0.0.1:10249",
		statusBindAddress:  "127.0.0.1:10266",
		syncPeriod:         30 * time.Second,
		source:             "apiserver",
		nodePortRange:      "30000-32767",
		bpfRoot:            defaultBPFRoot,
		procfs:             defaultProcfs,
		bpfMaxServices:     bpf.DefaultMaxServices,
		bpfMaxBackends:     bpf.DefaultMaxBackends,
		bpfCTMax:           bpf.DefaultCTMax,
		tcAttach:           string(bpf.TCAuto),
		iptablesVariant:    string(netfilter.VariantAuto),
		masqueradeBit:      14,
	}
}

func (o *options) addFlags(fs *pflag.FlagSet) {
	o.flags = fs
	fs.StringVar(&o.kubeconfig, "kubeconfig", o.kubeconfig, "Path to a kubeconfig file; empty means the in-cluster configuration.")
	fs.StringVar(&o.hostnameOverride, "hostname-override", o.hostnameOverride, "The name of this node, if not the host name.")
	fs.StringVar(&o.mode, "mode", o.mode, "Dataplane: auto, ebpf, iptables, ipvs or print (a dry run that prints the desired state). auto picks ebpf when the kernel supports it, else iptables.")
	fs.StringVar(&o.clusterCIDR, "cluster-cidr", o.clusterCIDR, "Comma-separated pod CIDRs; traffic from them is pod traffic (the local-traffic detector). Empty: no detector.")
	fs.StringSliceVar(&o.nodePortAddresses, "nodeport-addresses", o.nodePortAddresses, "CIDRs (or \"primary\") selecting the node addresses NodePorts are served on. Empty: all node addresses.")
	fs.BoolVar(&o.localhostNodePorts, "localhost-nodeports", o.localhostNodePorts, "Also serve NodePorts on 127.0.0.1 (IPv4).")
	fs.BoolVar(&o.masqueradeAll, "masquerade-all", o.masqueradeAll, "SNAT all traffic sent to cluster IPs.")
	fs.StringVar(&o.healthzBindAddress, "healthz-bind-address", o.healthzBindAddress, "ip:port for /healthz and /livez; empty disables.")
	fs.StringVar(&o.metricsBindAddress, "metrics-bind-address", o.metricsBindAddress, "ip:port for /metrics; empty disables.")
	fs.StringVar(&o.statusBindAddress, "status-bind-address", o.statusBindAddress, "ip:port for the agent's own /healthz, /livez and /metrics, for its probes and for a handover: while kube-proxy still runs, the healthz and metrics addresses answer for kube-proxy. Empty disables.")
	fs.DurationVar(&o.syncPeriod, "sync-period", o.syncPeriod, "Period of full resyncs (> 0).")
	fs.DurationVar(&o.minSyncPeriod, "min-sync-period", o.minSyncPeriod, "Minimum time between syncs (default 0 for ebpf and print, 1s for iptables and ipvs).")
	fs.StringVar(&o.configFile, "config", o.configFile, "A KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) file; flags given on the command line override it.")
	fs.StringVar(&o.source, "source", o.source, "Where Services come from: apiserver, or file:PATH (a file or directory of YAML manifests, re-read on change).")
	fs.StringVar(&o.nodePortRange, "node-port-range", o.nodePortRange, "The cluster's NodePort range (FIRST-LAST); NodePorts outside it are not programmed, and it is reserved in net.ipv4.ip_local_reserved_ports.")
	fs.BoolVar(&o.once, "once", o.once, "Sync once and exit (for dry runs with --mode=print).")
	fs.StringVar(&o.bpfRoot, "bpf-root", o.bpfRoot, "eBPF mode: where maps and links are pinned (on a bpffs; mounted if missing).")
	fs.StringVar(&o.procfs, "procfs", o.procfs, procfsHelp)
	fs.StringVar(&o.cgroupRoot, "cgroup-root", o.cgroupRoot, "eBPF mode: the cgroup v2 directory the socket hooks attach to (default: the cgroup v2 mount).")
	fs.Uint32Var(&o.bpfMaxServices, "bpf-max-services", o.bpfMaxServices, "eBPF mode: entries in the services map (one per frontend, one per backend slot, one per cluster IP).")
	fs.Uint32Var(&o.bpfMaxBackends, "bpf-max-backends", o.bpfMaxBackends, "eBPF mode: entries in the backends map (one per distinct endpoint address, port and protocol).")
	fs.Uint32Var(&o.bpfCTMax, "bpf-ct-max", o.bpfCTMax, "eBPF mode: connections from outside the node tracked at once (established ones are never evicted; beyond this many, new ones may be).")
	fs.StringSliceVar(&o.devices, "devices", o.devices, "eBPF mode: the devices that face the outside (names or glob patterns, like Cilium's --devices); NodePorts, externalIPs and LoadBalancer IPs are served to clients arriving there. Empty: the devices that carry a node address.")
	fs.StringVar(&o.tcAttach, "bpf-tc-attach", o.tcAttach, "eBPF mode: how the tc programs attach: auto (tcx where the kernel has it, else clsact), tcx or clsact.")
	fs.StringVar(&o.iptablesVariant, "iptables-variant", o.iptablesVariant, "iptables mode: the iptables binaries to use: nft, legacy, or auto (the one the node's rules are in, as kube-proxy's image decides).")
	fs.Int32Var(&o.masqueradeBit, "iptables-masquerade-bit", o.masqueradeBit, "iptables and IPVS modes: the bit of the packet mark that flags packets to masquerade (0-31).")
	fs.StringVar(&o.ipvsScheduler, "ipvs-scheduler", o.ipvsScheduler, "IPVS mode: the scheduler of the virtual services (rr, the default; mh and sh are also available).")
}

// usageError is a bad flag, config file or argument: the process exits 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func flagErr(flag, format string, args ...any) error {
	return usageError{fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...))}
}

// agentConfig is the validated result of the options.
type agentConfig struct {
	model         dataplane.Config
	mode          string
	kubeconfig    string
	sourceFile    string // "" for the API server
	healthzAddr   string
	metricsAddr   string
	statusAddr    string
	syncPeriod    time.Duration
	minSyncPeriod time.Duration
	// minSyncPeriodSet: given by flag or config file; otherwise the default
	// depends on the mode, which auto learns only at start (minSyncPeriodFor).
	minSyncPeriodSet bool
	once             bool
	bpfRoot          string
	cgroupRoot       string // "" means the cgroup v2 mount, found at start
	procfs           string
	bpfMaps          [3]uint32 // services, backends, connections tracked
	devices          []string
	tcMode           bpf.TCMode
	iptVariant       netfilter.Variant
	masqBit          int
	ipvsScheduler    string
}

// complete applies the config file (command-line flags win), then validates
// everything. It touches nothing on the system.
func (o *options) complete() (*agentConfig, error) {
	if o.configFile != "" {
		if err := o.applyConfigFile(o.configFile); err != nil {
			return nil, err
		}
	}
	return o.validate()
}

func (o *options) validate() (*agentConfig, error) {
	c := &agentConfig{model: dataplane.DefaultConfig(), kubeconfig: o.kubeconfig, once: o.once, cgroupRoot: o.cgroupRoot}
	if !filepath.IsAbs(o.bpfRoot) {
		return nil, flagErr("bpf-root", "want an absolute path, got %q", o.bpfRoot)
	}
	c.bpfRoot = o.bpfRoot
	if !filepath.IsAbs(o.procfs) {
		return nil, flagErr("procfs", "want an absolute path, got %q", o.procfs)
	}
	c.procfs = o.procfs
	if o.bpfMaxServices < 16 || o.bpfMaxBackends < 16 {
		return nil, flagErr("bpf-max-services", "the map sizes must be at least 16 (got %d services, %d backends)", o.bpfMaxServices, o.bpfMaxBackends)
	}
	if o.bpfCTMax < minCT || o.bpfCTMax > maxCT {
		return nil, flagErr("bpf-ct-max", "want %d to %d connections, got %d", minCT, maxCT, o.bpfCTMax)
	}
	c.bpfMaps = [3]uint32{o.bpfMaxServices, o.bpfMaxBackends, o.bpfCTMax}
	switch m := bpf.TCMode(o.tcAttach); m {
	case bpf.TCAuto, bpf.TCX, bpf.TCClsact:
		c.tcMode = m
	default:
		return nil, flagErr("bpf-tc-attach", "want auto, tcx or clsact, got %q", o.tcAttach)
	}
	for _, d := range o.devices {
		if _, err := path.Match(d, ""); err != nil || d == "" || strings.ContainsRune(d, '/') {
			return nil, flagErr("devices", "%q is not a device name or pattern", d)
		}
	}
	c.devices = o.devices
	if err := (&c.iptVariant).Set(o.iptablesVariant); err != nil {
		return nil, flagErr("iptables-variant", "%v", err)
	}
	if o.masqueradeBit < 0 || o.masqueradeBit > 31 {
		return nil, flagErr("iptables-masquerade-bit", "must be within 0-31, got %d", o.masqueradeBit)
	}
	c.masqBit = int(o.masqueradeBit)
	c.ipvsScheduler = o.ipvsScheduler
	if o.cgroupRoot != "" && !filepath.IsAbs(o.cgroupRoot) {
		return nil, flagErr("cgroup-root", "want an absolute path, got %q", o.cgroupRoot)
	}
	if !slices.Contains(knownModes, o.mode) {
		return nil, flagErr("mode", "unknown mode %q; want one of %s", o.mode, strings.Join(knownModes, ", "))
	}
	c.mode = o.mode
	name, err := nodeName(o.hostnameOverride)
	if err != nil {
		return nil, err
	}
	c.model.NodeName = name
	for _, s := range strings.Split(o.clusterCIDR, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, flagErr("cluster-cidr", "%q is not a CIDR", s)
		}
		c.model.ClusterCIDRs = append(c.model.ClusterCIDRs, p.Masked())
	}
	if c.model.NodePortAddresses, err = dataplane.ParseNodePortAddresses(o.nodePortAddresses); err != nil {
		return nil, flagErr("nodeport-addresses", "%v", err)
	}
	c.model.LocalhostNodePorts = o.localhostNodePorts
	c.model.MasqueradeAll = o.masqueradeAll
	if c.model.NodePortRange, err = dataplane.ParsePortRange(o.nodePortRange); err != nil {
		return nil, flagErr("node-port-range", "%v", err)
	}
	if c.healthzAddr, err = bindAddress("healthz-bind-address", o.healthzBindAddress); err != nil {
		return nil, err
	}
	if c.metricsAddr, err = bindAddress("metrics-bind-address", o.metricsBindAddress); err != nil {
		return nil, err
	}
	if c.statusAddr, err = bindAddress("status-bind-address", o.statusBindAddress); err != nil {
		return nil, err
	}
	if o.syncPeriod <= 0 {
		return nil, flagErr("sync-period", "must be greater than 0, got %s", o.syncPeriod)
	}
	if o.minSyncPeriod < 0 {
		return nil, flagErr("min-sync-period", "must not be negative, got %s", o.minSyncPeriod)
	}
	c.syncPeriod, c.minSyncPeriod = o.syncPeriod, o.minSyncPeriod
	c.minSyncPeriodSet = o.flags.Changed("min-sync-period") || o.minSyncPeriod != 0
	if c.mode == "ebpf" && c.model.MasqueradeAll {
		return nil, flagErr("masquerade-all", "%v; use --mode=iptables or --mode=ipvs", errEBPFMasqueradeAll)
	}
	switch {
	case o.source == "apiserver":
	case strings.HasPrefix(o.source, "file:") && len(o.source) > len("file:"):
		c.sourceFile = strings.TrimPrefix(o.source, "file:")
	default:
		return nil, flagErr("source", "want apiserver or file:PATH, got %q", o.source)
	}
	return c, nil
}

// minSyncPeriodFor is the minimum time between syncs in the mode the agent really
// runs: --min-sync-period when given, else kube-proxy's 1 s for the modes that
// rewrite rules with a tool, and none for the map-writing ones.
func (c *agentConfig) minSyncPeriodFor(mode string) time.Duration {
	if c.minSyncPeriodSet || (mode != "iptables" && mode != "ipvs") {
		return c.minSyncPeriod
	}
	return time.Second
}

// errEBPFMasqueradeAll: the socket hooks translate a connection that starts in a
// pod or on the node at connect(), so there is no packet to masquerade, and such
// connections would keep their source address where kube-proxy hides it.
var errEBPFMasqueradeAll = errors.New("eBPF mode cannot masquerade connections that start in pods or on the node (--masquerade-all)")

func nodeName(override string) (string, error) {
	name := strings.TrimSpace(override)
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("finding the node name: %w (set --hostname-override)", err)
		}
		name = h
	}
	return strings.ToLower(name), nil
}

// bindAddress checks an ip:port; empty disables the server.
func bindAddress(flag, s string) (string, error) {
	if s == "" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", flagErr(flag, "%q is not ip:port", s)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", flagErr(flag, "%q is not an IP address", host)
		}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", flagErr(flag, "%q is not a port", port)
	}
	return s, nil
}
