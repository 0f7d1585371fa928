package dataplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"
)

// Hooks let the agent follow the sync loop without the loop knowing about HTTP
// servers or events.
type Hooks struct {
	// Queued is called when a change is waiting to be synced (healthz).
	Queued func()
	// Synced is called after every successful sync (healthz, health-check ports).
	Synced func(*State)
	// Problems is called for a service whose problems changed (logs, Events).
	Problems func(ServiceName, []Problem)
}

// Runner drives a Backend from a Tracker: it coalesces triggers, keeps at least
// MinSyncPeriod between syncs, runs a full sync every SyncPeriod and after any
// failure, and retries failures with exponential backoff.
type Runner struct {
	backend       Backend
	tracker       *Tracker
	state         *State
	metrics       *Metrics
	hooks         Hooks
	minSyncPeriod time.Duration
	syncPeriod    time.Duration
	// Backoff bounds for retries after a failed sync.
	minBackoff, maxBackoff time.Duration

	trigger  chan struct{}
	triggers []time.Time // trigger times whose latency is still to be observed
	// notProgrammed are the frontends the backend refused and has not taken since.
	notProgrammed map[FrontendKey]bool
	now           func() time.Time
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	MinSyncPeriod time.Duration
	SyncPeriod    time.Duration
	Metrics       *Metrics
	Hooks         Hooks
}

// NewRunner returns a runner. Hand Kick to the tracker so events trigger syncs:
//
//	var r *Runner
//	t := NewTracker(cfg, func() { r.Kick() })
//	r = NewRunner(backend, t, rc)
func NewRunner(b Backend, t *Tracker, rc RunnerConfig) *Runner {
	if rc.SyncPeriod <= 0 {
		rc.SyncPeriod = 30 * time.Second
	}
	return &Runner{
		backend: b, tracker: t, state: NewState(), metrics: rc.Metrics, hooks: rc.Hooks,
		minSyncPeriod: rc.MinSyncPeriod, syncPeriod: rc.SyncPeriod,
		minBackoff: 100 * time.Millisecond, maxBackoff: rc.SyncPeriod,
		trigger: make(chan struct{}, 1),
		now:     time.Now,
	}
}

// State returns the desired state as of the last sync. Only the runner's goroutine
// may use it while Run is running.
func (r *Runner) State() *State { return r.state }

// Kick asks for a sync soon; it never blocks, and kicks coalesce.
func (r *Runner) Kick() {
	if r.metrics != nil {
		r.metrics.LastQueued.Set(float64(r.now().UnixNano()) / 1e9)
		s, e := r.tracker.Pending()
		r.metrics.ServiceChangesPend.Set(float64(s))
		r.metrics.EndpointChangesPend.Set(float64(e))
	}
	if r.hooks.Queued != nil {
		r.hooks.Queued()
	}
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Run syncs until ctx is done. Nothing is programmed before every source of the
// tracker has synced. With once, it returns after the first sync (dry runs). A
// sync that ctx stops ends the loop: it is the shutdown, not a failure to retry.
func (r *Runner) Run(ctx context.Context, once bool) error {
	if err := r.waitSynced(ctx); err != nil {
		return err
	}
	full := true // the first sync is full: the kernel may hold anything
	pending := true
	var lastStart time.Time
	periodic := time.NewTimer(r.syncPeriod)
	defer periodic.Stop()
	var retry <-chan time.Time
	backoff := r.minBackoff
	for {
		if pending {
			if wait := r.minSyncPeriod - r.now().Sub(lastStart); wait > 0 && !lastStart.IsZero() {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
			lastStart = r.now()
			err := r.SyncOnce(ctx, full)
			if once {
				return err
			}
			if stoppedBy(ctx, err) {
				klog.InfoS("Sync stopped: shutting down", "backend", r.backend.Name())
				return nil
			}
			pending = false
			if err != nil {
				klog.ErrorS(err, "Sync failed; the next sync is full", "backend", r.backend.Name(), "retryIn", backoff)
				full = true
				retry = time.After(backoff)
				backoff = min(2*backoff, r.maxBackoff)
			} else {
				if full {
					// Only a full sync restarts the period: partial ones under a steady
					// stream of changes must not put drift repair off for ever.
					periodic.Reset(r.syncPeriod)
				}
				full, retry, backoff = false, nil, r.minBackoff
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.trigger:
			pending = true
		case <-retry:
			pending = true
		case <-periodic.C:
			pending, full = true, true
		}
	}
}

func (r *Runner) waitSynced(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	logged := false
	for !r.tracker.HasSynced() {
		if !logged {
			klog.InfoS("Waiting for sources to sync before programming anything")
			logged = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped before the sources synced: %w", ctx.Err())
		case <-r.trigger:
		case <-tick.C:
		}
	}
	return nil
}

// SyncOnce takes the tracker's changes into the desired state and hands them to the
// backend: all of the state when full (or when the node changed), else the changed
// frontends, or nothing when nothing changed.
func (r *Runner) SyncOnce(ctx context.Context, full bool) error {
	start := r.now()
	ch := r.tracker.Take()
	cs := r.state.Apply(ch.Services)
	r.state.Node = ch.Node
	r.triggers = append(r.triggers, ch.TriggerTimes...)
	if r.metrics != nil {
		r.metrics.ServiceChangesTotal.Add(float64(ch.ServiceChanges))
		r.metrics.EndpointChangesTot.Add(float64(ch.EndpointChanges))
		s, e := r.tracker.Pending()
		r.metrics.ServiceChangesPend.Set(float64(s))
		r.metrics.EndpointChangesPend.Set(float64(e))
	}
	if r.hooks.Problems != nil {
		for n, ps := range cs.Problems {
			r.hooks.Problems(n, ps)
		}
	}
	full = full || ch.All
	var err error
	switch {
	case full:
		err = r.backend.Sync(ctx, r.state, nil)
	case !cs.Empty():
		err = r.backend.Sync(ctx, r.state, cs)
	}
	// Only a FrontendErrors on its own is a success; joined with anything else the
	// sync failed.
	rejected, partial := err.(FrontendErrors)
	if partial {
		r.reportRejected(rejected)
		err = nil
	}
	if err == nil {
		r.trackRejected(full, cs, rejected)
	}
	if err != nil {
		if r.metrics != nil && !stoppedBy(ctx, err) {
			r.metrics.SyncErrors.Inc()
		}
		return fmt.Errorf("%s backend: %w", r.backend.Name(), err)
	}
	if r.metrics != nil {
		r.metrics.Rejected.Set(float64(len(r.notProgrammed)))
	}
	end := r.now()
	if r.metrics != nil {
		r.metrics.observeSync(start, end, full, r.state, r.triggers)
	}
	r.triggers = nil
	if r.hooks.Synced != nil {
		r.hooks.Synced(r.state)
	}
	klog.V(2).InfoS("Synced", "backend", r.backend.Name(), "full", full, "changedFrontends", len(cs.Frontends),
		"frontends", len(r.state.Frontends), "took", end.Sub(start))
	return nil
}

// stoppedBy tells a sync that ended because ctx is done (its error wraps
// ctx.Err(), as Backend.Sync promises) from a failure.
func stoppedBy(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err())
}

// trackRejected keeps the set of frontends the backend has refused and not yet
// accepted: a full sync replaces it, a partial one updates the keys it wrote.
func (r *Runner) trackRejected(full bool, cs *ChangeSet, rejected FrontendErrors) {
	if full || r.notProgrammed == nil {
		r.notProgrammed = map[FrontendKey]bool{}
	} else {
		for k := range cs.Frontends {
			delete(r.notProgrammed, k)
		}
	}
	for k := range rejected {
		r.notProgrammed[k] = true
	}
}

// reportRejected tells each service which of its frontends the backend refused.
func (r *Runner) reportRejected(rejected FrontendErrors) {
	klog.ErrorS(rejected, "Some frontends were not programmed; everything else was", "backend", r.backend.Name())
	if r.hooks.Problems == nil {
		return
	}
	byService := map[ServiceName][]Problem{}
	for k, err := range rejected {
		if f := r.state.Frontends[k]; f != nil {
			byService[f.Service.ServiceName] = append(byService[f.Service.ServiceName],
				Problem{Reason: "FrontendNotProgrammed", Message: err.Error()})
		}
	}
	for n, ps := range byService {
		r.hooks.Problems(n, ps)
	}
}
