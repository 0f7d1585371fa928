package iptables

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
)

// BackendConfig is what the iptables dataplane is built from. The kernel
// boundaries are passed in, so tests give it fakes.
type BackendConfig struct {
	Model dataplane.Config
	// Families to program, each with its restorer and jumper.
	Families  []dataplane.Family
	Restorers map[dataplane.Family]netfilter.Restorer
	Jumpers   map[dataplane.Family]netfilter.Jumper
	Conntrack netfilter.Conntrack
	Sysctl    netfilter.Sysctl
	// MasqueradeBit is --iptables-masquerade-bit.
	MasqueradeBit int
	// Metrics, when set, gets kube-proxy's iptables metrics.
	Metrics prometheus.Registerer
}

// Backend is the iptables dataplane (--mode=iptables): kube-proxy's iptables
// mode, under Switchyard's own chain prefix.
type Backend struct {
	cfg     BackendConfig
	fams    []*familySync
	udp     udpFrontends
	metrics *metrics
	// LastLines is the size of the last sync's restore input, per family (tests,
	// and the sync log).
	LastLines map[dataplane.Family]int
}

// NewBackend prepares the iptables dataplane: nothing on the node changes before
// the first sync, which is full.
func NewBackend(cfg BackendConfig) (*Backend, error) {
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	b := &Backend{cfg: cfg, udp: udpFrontends{}, metrics: m, LastLines: map[dataplane.Family]int{}}
	for _, f := range cfg.Families {
		r, j := cfg.Restorers[f], cfg.Jumpers[f]
		if r == nil || j == nil {
			return nil, fmt.Errorf("iptables: no restorer or jumper for %s", f)
		}
		c := NewConfig(f, cfg.Model)
		c.MasqueradeBit = cfg.MasqueradeBit
		b.fams = append(b.fams, newFamilySync(c, r))
	}
	return b, nil
}

// ensureSysctls sets what the rules rely on; like the rules, only once the
// sources synced, so an agent that fails before that changed nothing.
func (b *Backend) ensureSysctls(c Config) error {
	if !c.LocalhostNodePortsEnabled() || b.cfg.Sysctl == nil {
		return nil
	}
	// As kube-proxy: the kernel routes 127.0.0.1:NodePort to a pod only with it.
	if _, err := netfilter.EnsureSysctl(b.cfg.Sysctl, netfilter.SysctlRouteLocalnet, "1"); err != nil {
		return fmt.Errorf("iptables: localhost NodePorts need %s=1: %w", netfilter.SysctlRouteLocalnet, err)
	}
	return nil
}

func (b *Backend) Name() string { return "iptables" }

// Sync writes every family's rules (all of them with changes nil or after a
// failure), then removes the UDP conntrack entries the change made stale. When
// ctx is done it stops at once (a restore in flight is stopped too) with an
// error wrapping ctx.Err().
func (b *Backend) Sync(ctx context.Context, st *dataplane.State, changes *dataplane.ChangeSet) error {
	var errs []error
	for _, f := range b.fams {
		if err := b.syncFamily(ctx, f, st, changes); err != nil {
			errs = append(errs, err)
		}
		if cerr := ctx.Err(); cerr != nil {
			// Shutting down: the other families and conntrack wait for the next agent.
			return errors.Join(append(errs, fmt.Errorf("iptables: sync stopped: %w", cerr))...)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err // the next, full, sync clears conntrack for what it programs
	}
	return b.clearStale(st, changes)
}

// syncFamily is one family's part of Sync.
func (b *Backend) syncFamily(ctx context.Context, f *familySync, st *dataplane.State, changes *dataplane.ChangeSet) error {
	if changes == nil || f.full {
		if err := errors.Join(b.ensureSysctls(f.cfg), b.ensureJumps(f.cfg)); err != nil {
			f.full = true
			return err
		}
	}
	partial := changes != nil && !f.full
	n, err := f.sync(ctx, st, changes)
	if err != nil && ctx.Err() != nil {
		return err // a shutdown, not a restore failure: not counted
	}
	b.metrics.synced(f, partial, err)
	if err != nil {
		return err
	}
	b.LastLines[f.cfg.Family] = n
	klog.V(4).InfoS("Wrote iptables rules", "family", f.cfg.Family, "lines", n)
	return nil
}

func (b *Backend) ensureJumps(cfg Config) error {
	j := b.cfg.Jumpers[cfg.Family]
	for _, jump := range BaseJumps(cfg) {
		if err := j.Ensure(jump); err != nil {
			return fmt.Errorf("iptables %s: jump from %s %s to %s: %w", cfg.Family, jump.Table, jump.Chain, jump.Target, err)
		}
	}
	return nil
}

// clearStale removes the UDP conntrack entries that would keep sending packets
// where the rules no longer do.
func (b *Backend) clearStale(st *dataplane.State, changes *dataplane.ChangeSet) error {
	stale := b.udp.update(st, changes)
	if b.cfg.Conntrack == nil || (len(stale.Services) == 0 && len(stale.Endpoints) == 0) {
		return nil
	}
	if _, err := b.cfg.Conntrack.Clear(stale); err != nil {
		// The rules are right; a stale entry only delays a client until it expires.
		klog.ErrorS(err, "Clearing stale UDP conntrack entries")
	}
	return nil
}

// Cleanup removes every jump and chain Switchyard installed, in every family
// it was built for.
func (b *Backend) Cleanup(ctx context.Context) error {
	var errs []error
	for _, f := range b.fams {
		errs = append(errs, Cleanup(ctx, f.cfg.Family, b.cfg.Restorers[f.cfg.Family], b.cfg.Jumpers[f.cfg.Family]))
	}
	return errors.Join(errs...)
}

// Cleanup removes Switchyard's jumps and chains from one family's tables. A
// family without any of them is not touched at all: the jump checks would
// create the legacy tables in a namespace that uses nft.
func Cleanup(ctx context.Context, f dataplane.Family, r netfilter.Restorer, j netfilter.Jumper) error {
	ours := map[string][]string{}
	for _, t := range tables {
		chains, err := r.ChainNames(ctx, t)
		if err != nil {
			return err
		}
		for _, c := range chains {
			if strings.HasPrefix(c, Prefix) {
				ours[t] = append(ours[t], c)
			}
		}
	}
	if len(ours) == 0 {
		return nil
	}
	var errs []error
	for _, jump := range BaseJumps(DefaultConfig(f)) {
		errs = append(errs, j.Remove(jump))
	}
	for _, t := range tables {
		errs = append(errs, r.DeleteChains(ctx, t, ours[t]))
	}
	return errors.Join(errs...)
}

// CleanupAll removes Switchyard's rules from both families and both variants
// of the caller's network namespace (switchyard cleanup). It runs to the end:
// stopping halfway would leave jumps gone and chains behind.
func CleanupAll() error {
	return netfilter.EachInstalled(func(f dataplane.Family, r netfilter.Restorer, j netfilter.Jumper) error {
		if err := Cleanup(context.Background(), f, r, j); err != nil {
			return fmt.Errorf("iptables cleanup: %w", err)
		}
		return nil
	})
}
