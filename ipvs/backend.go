package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// Config is what the IPVS dataplane is built from. The kernel boundaries are
// passed in, so tests give it fakes.
type Config struct {
	Options
	// Device is the dummy device for the service addresses (DefaultDevice when
	// empty).
	Device string
	IPVS   IPVS
	Links  Links
	// Records, when set, remembers the virtual services nothing else marks as
	// Switchyard's (see Records); FileRecords{DefaultRecordsPath} in the agent.
	Records Records
	// Families to write iptables rules for, each with its restorer and jumper.
	Families  []dataplane.Family
	Restorers map[dataplane.Family]netfilter.Restorer
	Jumpers   map[dataplane.Family]netfilter.Jumper
	// Sysctl, when set, gets the sysctls IPVS mode relies on.
	Sysctl netfilter.Sysctl
	// Conntrack, when set, forgets UDP flows a change made stale.
	Conntrack netfilter.Conntrack
}

// Backend is the IPVS dataplane (--mode=ipvs): kube-proxy's IPVS mode.
type Backend struct {
	cfg  Config
	ipvs *ipvsState
	fams []*familyRules
	// full: the next sync is full (at start, after a failure).
	full bool
	// retry are frontends that failed in the last sync: the next one, even a
	// partial one, tries them again.
	retry map[dataplane.FrontendKey]bool
	// LastLines is the size of the last sync's restore input, per family.
	LastLines map[dataplane.Family]int
}

// schedulers are the IPVS schedulers of Linux; kube-proxy documents rr, lc, dh,
// sh, sed, nq and mh, the kernel has these.
var schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}

// NewBackend prepares the IPVS dataplane: nothing on the node changes before
// the first sync, which is full.
func NewBackend(cfg Config) (*Backend, error) {
	if cfg.IPVS == nil || cfg.Links == nil {
		return nil, errors.New("ipvs: no IPVS or netlink handle")
	}
	if cfg.Device == "" {
		cfg.Device = DefaultDevice
	}
	if len(cfg.Device) > 15 {
		return nil, fmt.Errorf("ipvs: device name %q is longer than 15 bytes", cfg.Device)
	}
	if cfg.Scheduler == "" {
		cfg.Scheduler = DefaultScheduler
	}
	if !slices.Contains(schedulers, cfg.Scheduler) {
		return nil, fmt.Errorf("ipvs: unknown scheduler %q; the kernel has %v", cfg.Scheduler, schedulers)
	}
	b := &Backend{cfg: cfg, full: true, retry: map[dataplane.FrontendKey]bool{}, LastLines: map[dataplane.Family]int{},
		ipvs: newIPVSState(cfg.IPVS, cfg.Links, cfg.Device, cfg.Options, cfg.Records)}
	for _, f := range cfg.Families {
		r, j := cfg.Restorers[f], cfg.Jumpers[f]
		if r == nil || j == nil {
			return nil, fmt.Errorf("ipvs: no iptables restorer or jumper for %s", f)
		}
		b.fams = append(b.fams, newFamilyRules(f, r, j, cfg.Options))
	}
	return b, nil
}

func (b *Backend) Name() string { return "ipvs" }

// Sync programs the frontends in changes (all of them, read back from the
// kernel first, with changes nil or after a failure). The order keeps traffic
// flowing: addresses and virtual services first, then the rules, then what is
// gone is deleted. When ctx ends it stops between frontends, or in the rules'
// restore, with an error wrapping ctx.Err().
func (b *Backend) Sync(ctx context.Context, st *dataplane.State, changes *dataplane.ChangeSet) error {
	full := changes == nil || b.full
	if full {
		if err := b.prepare(); err != nil {
			b.full = true
			return err
		}
	}
	want := b.want(st, changes, full)
	if full {
		if err := b.ipvs.readServices(want); err != nil {
			b.full = true
			return err
		}
	}
	stale := staleUDP(b.ipvs.wanted, want, full)
	out := b.write(ctx, st, want, full)
	b.retry = map[dataplane.FrontendKey]bool{}
	for k := range out.frontends {
		b.retry[k] = true
	}
	if errs := out.global; len(errs) > 0 {
		b.full = true
		for _, k := range sortedKeys(out.frontends) {
			errs = append(errs, out.frontends[k]...)
		}
		return errors.Join(errs...)
	}
	b.full = false
	b.clearStale(stale)
	if len(out.frontends) > 0 {
		fe := dataplane.FrontendErrors{}
		for k, errs := range out.frontends {
			fe[k] = errors.Join(errs...)
		}
		return fe
	}
	return nil
}

// write is the writing part of Sync, in its make-before-break order. When ctx
// ends, what is gone stays (the next agent's full sync deletes it): the rules
// may still lead there.
func (b *Backend) write(ctx context.Context, st *dataplane.State, want map[dataplane.FrontendKey]*Wanted, full bool) outcome {
	var out outcome
	b.ipvs.program(ctx, want, full, &out)
	if len(out.global) > 0 {
		return out
	}
	out.global = append(out.global, b.syncRules(ctx, st, want, full)...)
	if err := ctx.Err(); err != nil {
		out.global = append(out.global, fmt.Errorf("ipvs: stopped before deleting what is gone: %w", err))
		return out
	}
	b.ipvs.finish(want, full, &out)
	return out
}

// prepare is a full sync's start: the sysctls and the device, read back.
func (b *Backend) prepare() error {
	if err := b.ensureSysctls(); err != nil {
		return err
	}
	return b.ipvs.readLinks()
}

// ensureSysctls sets what kube-proxy's IPVS mode sets (net.ipv4.vs.* are per
// network namespace and exist once ip_vs is loaded). conn_reuse_mode is left
// alone: kube-proxy changes it only on kernels before 5.9, whose IPVS stalled
// reused connections (kubernetes#93297).
func (b *Backend) ensureSysctls() error {
	if b.cfg.Sysctl == nil {
		return nil
	}
	for _, s := range [][2]string{
		// conntrack: IPVS keeps conntrack entries for what it forwards, without
		// which the nat table's MASQUERADE never sees the connection.
		{"net/ipv4/vs/conntrack", "1"},
		// expire_nodest_conn: a flow whose destination was deleted ends at its
		// next packet, instead of being dropped until it times out.
		{"net/ipv4/vs/expire_nodest_conn", "1"},
		// expire_quiescent_template: affinity to a destination at weight 0 ends,
		// so a drained endpoint gets no new connections from its old clients.
		{"net/ipv4/vs/expire_quiescent_template", "1"},
		{"net/ipv4/ip_forward", "1"},
	} {
		if _, err := netfilter.EnsureSysctl(b.cfg.Sysctl, s[0], s[1]); err != nil {
			return fmt.Errorf("ipvs: %s=%s: %w", s[0], s[1], err)
		}
	}
	return nil
}

// want is the IPVS side of the frontends this sync looks at: every one on a
// full sync; the changed ones and those that failed last time otherwise (nil
// for a frontend that is gone).
func (b *Backend) want(st *dataplane.State, changes *dataplane.ChangeSet, full bool) map[dataplane.FrontendKey]*Wanted {
	if full {
		return Want(st, b.cfg.Options, b.ipvs.local)
	}
	out := make(map[dataplane.FrontendKey]*Wanted, len(changes.Frontends)+len(b.retry))
	for k := range changes.Frontends {
		out[k] = WantFrontend(st.Frontends[k], b.cfg.Options, b.ipvs.local)
	}
	for k := range b.retry {
		out[k] = WantFrontend(st.Frontends[k], b.cfg.Options, b.ipvs.local)
	}
	return out
}

// syncRules writes every family's rules for the frontends in want.
func (b *Backend) syncRules(ctx context.Context, st *dataplane.State, want map[dataplane.FrontendKey]*Wanted, full bool) []error {
	var errs []error
	for _, fr := range b.fams {
		if err := ctx.Err(); err != nil {
			return append(errs, fmt.Errorf("ipvs: stopped before the %s rules: %w", fr.family, err))
		}
		nodeIP := primaryIP(st.Node, fr.family)
		next := map[dataplane.FrontendKey]frontendRules{}
		for k, w := range want {
			if dataplane.FamilyOf(k.Addr) == fr.family {
				next[k] = renderFrontend(st.Frontends[k], w, b.cfg.Options, nodeIP)
			}
		}
		n, err := fr.sync(ctx, next, full)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b.LastLines[fr.family] = n
		klog.V(4).InfoS("Wrote IPVS mode's iptables rules", "family", fr.family, "lines", n)
	}
	return errs
}

// primaryIP is the node's first address of a family.
func primaryIP(n dataplane.NodeInfo, f dataplane.Family) netip.Addr {
	for _, ip := range n.IPs {
		if dataplane.FamilyOf(ip) == f {
			return ip
		}
	}
	return netip.Addr{}
}

// Cleanup removes Switchyard's virtual services (also an earlier process's:
// see ipvsState.ours), the device with its addresses, and IPVS mode's rules in
// every family the backend was built for.
func (b *Backend) Cleanup(ctx context.Context) error {
	var errs []error
	for _, fr := range b.fams {
		if err := cleanupRules(ctx, fr.restorer, fr.jumper); err != nil {
			errs = append(errs, fmt.Errorf("ipvs rules (%s): %w", fr.family, err))
		}
		fr.kernel, fr.full = newRuleSet(b.cfg.Options), true
	}
	errs = append(errs, b.ipvs.cleanup())
	b.full = true
	return errors.Join(errs...)
}
