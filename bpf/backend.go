package bpf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/dataplane"
)

// Config is what the eBPF dataplane needs from the agent.
type Config struct {
	// PinDir is where maps and links are pinned (--bpf-root); pins there survive a
	// restart, so connections and programmed state do too.
	PinDir string
	// CgroupPath is the cgroup v2 directory the socket hooks attach to
	// (--cgroup-root): the root on a real node, a sub-cgroup in tests.
	CgroupPath string
	// MaxServices and MaxBackends size the maps (0: the defaults).
	MaxServices, MaxBackends uint32
	// CTMax is the connections from outside tracked at once (0: DefaultCTMax).
	CTMax uint32
	// NodePortRange is --node-port-range: masquerade ports stay out of it.
	NodePortRange dataplane.PortRange
	// Devices are the devices that face the outside (--devices, names or glob
	// patterns); empty: those that carry a node address.
	Devices []string
	// TCMode says how the tc programs attach (TCX where the kernel has it).
	TCMode TCMode
	// ClusterCIDRs are the pod CIDRs (--cluster-cidr): pods of other nodes that
	// reach a frontend through this node get the Pod route, as in kube-proxy.
	ClusterCIDRs []netip.Prefix
	// Metrics, when set, gets switchyard_bpf_map_pressure.
	Metrics prometheus.Registerer
}

// Backend is the eBPF dataplane (--mode=ebpf): socket-level load balancing for
// traffic that starts on the node, tc programs for traffic from outside.
type Backend struct {
	cfg       Config
	objs      *Objects
	writer    *Writer
	destroyer SocketDestroyer
	nat       *natConfig
	devices   *deviceSet
	gc        *ctGC
	ctHandle  *netlink.Handle // conntrack of the backend's network namespace, for taken
	taken     *natTaken
	stop      context.CancelFunc // ends the device watch, the collector, the drop log and taken
	bg        sync.WaitGroup     // the collector, the drop log and taken, done before the maps close
}

// How often expired connections leave ct_assured, and how often dropped
// connections are logged (at most one line per reason each time).
const (
	ctGCInterval    = 30 * time.Second
	dropLogInterval = 10 * time.Second
	// How often conntrack's NAT ports are copied (natTaken): often while it holds
	// some (a handover), rarely when it held none.
	natTakenBusy = 2 * time.Second
	natTakenIdle = 30 * time.Second
)

// NewBackend loads the programs, takes over the pinned maps an earlier agent left,
// and attaches the hooks (replacing earlier programs in place, never detaching).
// The tc programs go on the devices of the calling thread's network namespace,
// at the first Sync and whenever devices appear.
func NewBackend(cfg Config) (*Backend, error) {
	if err := MountBPFFS(bpffsOf(cfg.PinDir)); err != nil {
		return nil, err
	}
	objs, err := Load(LoadOptions{PinDir: cfg.PinDir, MaxServices: cfg.MaxServices, MaxBackends: cfg.MaxBackends, CTMax: cfg.CTMax})
	if err != nil {
		return nil, err
	}
	if err := objs.Attach(cfg.CgroupPath); err != nil {
		return nil, fmt.Errorf("attaching to cgroup %s: %w (and %v)", cfg.CgroupPath, err, objs.Close())
	}
	nat := newNATConfig(&objs.TC, cfg.NodePortRange)
	if err := errors.Join(nat.setClusterCIDRs(cfg.ClusterCIDRs), nat.setPortRange()); err != nil {
		return nil, errors.Join(err, objs.Close())
	}
	tc, err := NewTCAttacher(cfg.PinDir, cfg.TCMode)
	if err != nil {
		return nil, errors.Join(err, objs.Close())
	}
	devices, err := newDeviceSet(tc, cfg.Devices, &objs.TC)
	if err != nil {
		return nil, errors.Join(err, tc.Close(), objs.Close())
	}
	// Made here, so its socket is in the calling thread's network namespace.
	ctHandle, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("conntrack: %w", err), devices.close(), objs.Close())
	}
	b := &Backend{
		cfg: cfg, objs: objs, destroyer: SocketDestroyer{Cgroup: cfg.CgroupPath}, nat: nat, devices: devices,
		ctHandle: ctHandle, taken: &natTaken{ct: ctHandle, m: NewKernelMap[tcCtKey, uint8](objs.TC.NATTaken)},
		gc: newCTGC(kernelMap[tcCtKey, tcCtVal]{objs.TC.CTAssured}),
		writer: NewWriter(NewKernelMap[sockSvcKey, sockSvcVal](objs.Services), NewKernelMap[uint32, sockBackend](objs.Backends),
			NewKernelMap[tcRangeKey, uint8](objs.TC.SourceRanges)),
	}
	if cfg.Metrics != nil {
		for _, c := range []prometheus.Collector{b.pressure(), eventsCollector(objs.TC.Events)} {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, errors.Join(err, b.Close())
			}
		}
	}
	if err := b.watchDevices(); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	return b, nil
}

// watchDevices attaches the tc programs to devices as they appear (a new pod's
// veth), between syncs. WatchLinks subscribes in the calling thread's network
// namespace, the one NewBackend runs in.
func (b *Backend) watchDevices() error {
	ctx, cancel := context.WithCancel(context.Background())
	b.bg.Go(func() { b.gc.run(ctx, ctGCInterval) })
	b.bg.Go(func() { logDrops(ctx, b.objs.TC.Events, dropLogInterval) })
	b.bg.Go(func() { b.taken.run(ctx, natTakenBusy, natTakenIdle) })
	notify := func() {
		if err := b.devices.sync(false); err != nil {
			klog.ErrorS(err, "Attaching the tc programs to the node's devices")
		}
	}
	if err := WatchLinks(ctx, notify); err != nil {
		cancel()
		return err
	}
	b.stop = cancel
	return nil
}

// pressure reports how full the maps are (entries / max entries), named like
// Cilium's metric so the same alerts work: a full map refuses new services.
func (b *Backend) pressure() prometheus.Collector {
	desc := prometheus.NewDesc("switchyard_bpf_map_pressure", "Fill ratio of a BPF map (entries / max entries)", []string{"map_name"}, nil)
	return collectorFunc{desc, func(ch chan<- prometheus.Metric) {
		svcs, bes := b.writer.Entries()
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(svcs)/float64(b.objs.Services.MaxEntries()), "services")
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(bes)/float64(b.objs.Backends.MaxEntries()), "backends")
		// As of the collector's last pass: established connections from outside.
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(b.gc.entries.Load())/float64(b.objs.TC.CTAssured.MaxEntries()), mapCTAssured)
	}}
}

type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

func (b *Backend) Name() string { return "ebpf" }

// Sync writes the maps, then follows the node's addresses and devices. When
// ctx ends the maps' writer stops between two frontends, and the node's part
// waits for the next sync; sockets connected to backends it removed are
// destroyed all the same.
func (b *Backend) Sync(ctx context.Context, st *dataplane.State, changes *dataplane.ChangeSet) error {
	err := b.writer.Sync(ctx, st, changes)
	if ctx.Err() == nil {
		// Joined only when it failed: a FrontendErrors must reach the runner as is.
		if nerr := b.syncNode(st, changes == nil); nerr != nil {
			err = errors.Join(err, nerr)
		}
	}
	// Clients keep sending into a removed backend otherwise; a failure here is
	// logged, not the sync's: the backend is gone whatever happens to the sockets.
	if gone := b.writer.TakeRemovedUDP(); len(gone) > 0 {
		if derr := b.destroyer.Destroy(gone); derr != nil {
			klog.ErrorS(derr, "Destroying UDP sockets connected to removed backends", "backends", gone)
		}
	}
	return err
}

// syncNode gives the tc programs the node's addresses and attaches them to the
// devices (all of them again with full).
func (b *Backend) syncNode(st *dataplane.State, full bool) error {
	err := b.nat.setNodeIPs(st.Node.IPs, full)
	if full {
		err = errors.Join(err, b.nat.setPortRange())
	}
	b.devices.setNodeIPs(st.Node.IPs)
	return errors.Join(err, b.devices.sync(full))
}

// Cleanup removes the pins, which detaches the programs and frees the maps.
func (b *Backend) Cleanup(context.Context) error {
	return errors.Join(runInNetns(b.devices.ns, func() error { return UnpinTC(b.cfg.PinDir) }), Unpin(b.cfg.PinDir))
}

// Close releases this process's handles; the pins keep everything in place.
func (b *Backend) Close() error {
	if b.stop != nil {
		b.stop()
	}
	b.bg.Wait()
	b.ctHandle.Close()
	return errors.Join(b.devices.close(), b.objs.Close())
}

// bpffsOf is the bpffs mount that holds pinDir.
func bpffsOf(pinDir string) string {
	if strings.HasPrefix(filepath.Clean(pinDir)+"/", "/sys/fs/bpf/") {
		return "/sys/fs/bpf"
	}
	return filepath.Dir(filepath.Clean(pinDir))
}
