// Package bpf is the eBPF dataplane: socket-level load balancing on cgroup hooks (sock.c), loaded
// from the bpf2go output committed next to it, with its maps and links pinned in bpffs so that the
// dataplane survives a restart of the agent.
package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"k8s.io/klog/v2"
)

// The generated sock_bpfel.go and sock_bpfel.o are committed, so building needs no clang.
// `make generate` (bpf/prereqs.sh first) rebuilds them.
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -target bpfel -cflags "-O2 -g -Wall -Werror" -type svc_key -type svc_val -type backend -type revnat_key -type revnat_val -type affinity_key -type affinity_val sock sock.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -target bpfel -cflags "-O2 -g -Wall -Werror" -type ct_key -type ct_val -type client_affinity_key -type range_key -type cidr_key -type snat_addr tc tc.c -- -I/usr/include/x86_64-linux-gnu

// Default map sizes (max_entries), also the ones compiled into sock.c.
const (
	DefaultMaxServices = 262144 // service entries plus backend slots
	DefaultMaxBackends = 262144
	// DefaultCTMax is the connections from outside tracked at once (--bpf-ct-max), as
	// kube-proxy's smallest conntrack limit (--conntrack-min); each takes two entries.
	DefaultCTMax = 131072
)

// Map names in sock.c and tc.c, also their pin file names.
const (
	mapServices       = "services"
	mapBackends       = "backends"
	mapRevNAT         = "revnat"
	mapAffinity       = "affinity"
	mapCTAssured      = "ct_assured"
	mapCTLRU          = "ct_lru"
	mapClientAffinity = "client_affinity"
	mapSourceRanges   = "source_ranges"
	mapClusterCIDRs   = "cluster_cidrs"
	mapSNATAddrs      = "snat_addrs"
	mapSNATPorts      = "snat_ports"
	mapTCEvents       = "lb_events"
	mapTCScratch      = "scratch"
	mapFlowTmp        = "flow_tmp"
	mapLBFlags        = "lb_flags"
	mapNATTaken       = "nat_taken"
)

var mapNames = []string{mapServices, mapBackends, mapRevNAT, mapAffinity, mapCTAssured, mapCTLRU,
	mapClientAffinity, mapSourceRanges, mapClusterCIDRs, mapSNATAddrs, mapSNATPorts, mapTCEvents, mapLBFlags, mapNATTaken}

// statelessMaps hold nothing a restart must keep: a pinned one this build cannot reuse (another
// version's size) is replaced instead of failing the load.
var statelessMaps = []string{mapTCEvents, mapLBFlags, mapNATTaken}

// legacyPins are what earlier versions pinned and this one no longer uses: Unpin removes them.
var legacyPins = []string{"ct"}

// LoadOptions configure Load.
type LoadOptions struct {
	// PinDir is a directory on bpffs for the maps and links; it is created if missing. Maps pinned
	// there already are reused with their contents, so state survives a restart. Empty: nothing is
	// pinned and everything goes away with Close.
	PinDir string
	// MaxServices and MaxBackends size the services and backends maps; 0 means the default.
	// A pinned map of another size is not reused: Load fails and says so.
	MaxServices, MaxBackends uint32
	// CTMax is the connections from outside the tc programs track at once (0: DefaultCTMax):
	// both connection-tracking maps get two entries per connection.
	CTMax uint32
}

// Objects are the loaded programs and maps.
type Objects struct {
	Services *ebpf.Map // sockSvcKey -> sockSvcVal
	Backends *ebpf.Map // uint32 -> sockBackend
	RevNAT   *ebpf.Map // sockRevnatKey -> sockRevnatVal (LRU)
	Affinity *ebpf.Map // sockAffinityKey -> sockAffinityVal (LRU)

	// The tc programs (tc.c) and the maps only they use; services and backends
	// are the socket programs' maps.
	TC tcOwn

	pinDir string
	objs   sockObjects
	links  []attached
}

// tcOwn is what Load takes from tc.c.
type tcOwn struct {
	ExtIngress     *ebpf.Program `ebpf:"ext_ingress"`
	ExtEgress      *ebpf.Program `ebpf:"ext_egress"`
	PodIngress     *ebpf.Program `ebpf:"pod_ingress"`
	PodEgress      *ebpf.Program `ebpf:"pod_egress"`
	CTAssured      *ebpf.Map     `ebpf:"ct_assured"`      // tcCtKey -> tcCtVal: established flows
	CTLRU          *ebpf.Map     `ebpf:"ct_lru"`          // tcCtKey -> tcCtVal (LRU): the others
	ClientAffinity *ebpf.Map     `ebpf:"client_affinity"` // tcClientAffinityKey -> tcAffinityVal (LRU)
	SourceRanges   *ebpf.Map     `ebpf:"source_ranges"`   // tcRangeKey -> uint8 (LPM)
	ClusterCIDRs   *ebpf.Map     `ebpf:"cluster_cidrs"`   // tcCidrKey -> uint8 (LPM)
	SNATAddrs      *ebpf.Map     `ebpf:"snat_addrs"`      // 0: IPv4, 1: IPv6 -> tcSnatAddr
	SNATPorts      *ebpf.Map     `ebpf:"snat_ports"`      // 0 -> tcSnatPorts
	Events         *ebpf.Map     `ebpf:"lb_events"`       // per-CPU counters, see TCEvents
	Flags          *ebpf.Map     `ebpf:"lb_flags"`        // 0 -> LB_DRAINING or 0, see Drain
	NATTaken       *ebpf.Map     `ebpf:"nat_taken"`       // tcCtKey -> 1: conntrack's NAT holds the port (natTaken)
}

func (t *tcOwn) close() error {
	var errs []error
	for _, c := range []interface{ Close() error }{t.ExtIngress, t.ExtEgress, t.PodIngress, t.PodEgress,
		t.CTAssured, t.CTLRU, t.ClientAffinity, t.SourceRanges, t.ClusterCIDRs, t.SNATAddrs, t.SNATPorts, t.Events, t.Flags, t.NATTaken} {
		errs = append(errs, c.Close()) // nil-safe: Load may have failed half-way
	}
	return errors.Join(errs...)
}

// Load loads the programs and creates the maps, or opens the pinned ones in opts.PinDir.
func Load(opts LoadOptions) (*Objects, error) {
	spec, err := loadSock()
	if err != nil {
		return nil, fmt.Errorf("bpf: parse the embedded object: %w", err)
	}
	tcSpec, err := loadTc()
	if err != nil {
		return nil, fmt.Errorf("bpf: parse the embedded tc object: %w", err)
	}
	sizes := map[string]uint32{mapServices: opts.MaxServices, mapBackends: opts.MaxBackends}
	for name, n := range sizes {
		if n > 0 {
			spec.Maps[name].MaxEntries = n
			tcSpec.Maps[name].MaxEntries = n // a replacement must match its spec
		}
	}
	ct := opts.CTMax
	if ct == 0 {
		ct = DefaultCTMax
	}
	tcSpec.Maps[mapCTAssured].MaxEntries = 2 * ct
	tcSpec.Maps[mapCTLRU].MaxEntries = 2 * ct
	var co ebpf.CollectionOptions
	if opts.PinDir != "" {
		if err := os.MkdirAll(opts.PinDir, 0o700); err != nil {
			return nil, fmt.Errorf("bpf: pin directory: %w", err)
		}
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinByName
		}
		for name, m := range tcSpec.Maps {
			if name != mapTCScratch && name != mapFlowTmp { // per-CPU scratch space: nothing to keep
				m.Pinning = ebpf.PinByName
			}
		}
		co.Maps.PinPath = opts.PinDir
		if err := replaceStale(tcSpec, opts.PinDir); err != nil {
			return nil, err
		}
	}
	o := &Objects{pinDir: opts.PinDir}
	if err := spec.LoadAndAssign(&o.objs, &co); err != nil {
		return nil, loadError(err, opts.PinDir)
	}
	o.Services, o.Backends = o.objs.Services, o.objs.Backends
	o.RevNAT, o.Affinity = o.objs.Revnat, o.objs.Affinity
	// The tc programs share the socket programs' services and backends maps.
	co.MapReplacements = map[string]*ebpf.Map{mapServices: o.Services, mapBackends: o.Backends}
	if err := tcSpec.LoadAndAssign(&o.TC, &co); err != nil {
		return nil, errors.Join(loadError(err, opts.PinDir), o.objs.Close())
	}
	// Programs an agent loads serve: a drain someone began (a rollback given up) ends.
	if err := o.TC.Flags.Put(uint32(0), uint32(0)); err != nil {
		return nil, errors.Join(fmt.Errorf("bpf: clearing lb_flags: %w", err), o.Close())
	}
	return o, nil
}

// replaceStale removes the pins of stateless maps that this build's spec cannot reuse.
func replaceStale(spec *ebpf.CollectionSpec, pinDir string) error {
	for _, name := range statelessMaps {
		path := filepath.Join(pinDir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("bpf: pinned %s: %w", name, err)
		}
		cerr := spec.Maps[name].Compatible(m)
		m.Close()
		if cerr != nil {
			klog.InfoS("Replacing a pinned map of another version", "map", name, "reason", cerr)
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("bpf: replacing pinned %s: %w", name, err)
			}
		}
	}
	return nil
}

func loadError(err error, pinDir string) error {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return fmt.Errorf("bpf: load: %+v", verr) // the whole verifier log
	}
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("bpf: a map pinned in %s differs from this build's (size flags changed?); "+
			"`switchyard cleanup` removes it: %w", pinDir, err)
	}
	return fmt.Errorf("bpf: load: %w", err)
}

// Close closes every file descriptor. Pinned maps and links stay, and with them the attachment.
func (o *Objects) Close() error {
	var errs []error
	for _, l := range o.links {
		errs = append(errs, l.link.Close())
	}
	o.links = nil
	errs = append(errs, o.TC.close(), o.objs.Close())
	return errors.Join(errs...)
}

// Unpin removes the pins Load and Attach leave in pinDir, and pinDir itself if that leaves it empty.
// Once no process holds them any more, the programs are detached and the maps freed. Missing pins
// are not an error, so Unpin also finishes a half-done cleanup.
func Unpin(pinDir string) error {
	var errs []error
	names := append(slices.Clone(mapNames), legacyPins...)
	for _, h := range hooks {
		names = append(names, linkPinName(h.name))
	}
	for _, n := range names {
		if err := os.Remove(filepath.Join(pinDir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("bpf: %w (files Switchyard does not know are left there)", err))
	}
	return errors.Join(errs...)
}
