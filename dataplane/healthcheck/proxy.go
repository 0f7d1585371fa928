// Package healthcheck serves the node's /healthz and /livez and the per-service
// health-check node ports, with the semantics of kube-proxy's pkg/proxy/healthcheck
// so that load balancers and probes written for kube-proxy keep working.
package healthcheck

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

// ProxyHealth is kube-proxy's ProxyHealthServer without the server: the agent
// mounts Handler wherever it serves /healthz.
type ProxyHealth struct {
	timeout time.Duration
	now     func() time.Time

	mu                  sync.RWMutex
	lastUpdated         time.Time
	oldestPendingQueued time.Time // zero while nothing is pending
	nodeEligible        bool
}

// NewProxyHealth returns a healthy, eligible ProxyHealth. kube-proxy uses
// healthTimeout = 2 * syncPeriod. now defaults to time.Now.
func NewProxyHealth(healthTimeout time.Duration, now func() time.Time) *ProxyHealth {
	if now == nil {
		now = time.Now
	}
	// Eligible until told otherwise, so a starting agent is not reported unhealthy
	// before it has seen its Node.
	return &ProxyHealth{timeout: healthTimeout, now: now, nodeEligible: true}
}

// QueuedUpdate records that a change is waiting to be synced. Only the oldest
// pending change counts: a steady stream of changes must not hide a stuck loop.
func (p *ProxyHealth) QueuedUpdate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.oldestPendingQueued.IsZero() {
		p.oldestPendingQueued = p.now()
	}
}

// Updated records a successful sync.
func (p *ProxyHealth) Updated() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastUpdated = p.now()
	p.oldestPendingQueued = time.Time{}
}

// SyncNode sets whether the node may receive traffic; the caller says false while
// the node is being deleted or is tainted ToBeDeletedByClusterAutoscaler, so load
// balancers drain it.
func (p *ProxyHealth) SyncNode(eligible bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nodeEligible = eligible
}

// IsHealthy reports whether no change has waited longer than the health timeout.
// It ignores node eligibility, as kube-proxy's does.
func (p *ProxyHealth) IsHealthy() bool {
	healthy, _, _, _ := p.status()
	return healthy
}

func (p *ProxyHealth) status() (healthy bool, lastUpdated, currentTime time.Time, eligible bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	currentTime = p.now()
	healthy = p.oldestPendingQueued.IsZero() || !currentTime.After(p.oldestPendingQueued.Add(p.timeout))
	return healthy, p.lastUpdated, currentTime, p.nodeEligible
}

// Handler serves /healthz and /livez; any other path is 404.
func (p *ProxyHealth) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		healthy, last, now, eligible := p.status()
		last = writeStatus(w, healthy && eligible, last, now)
		fmt.Fprintf(w, `{"lastUpdated": %q,"currentTime": %q, "nodeEligible": %v}`, last, now, eligible)
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		healthy, last, now, _ := p.status()
		last = writeStatus(w, healthy, last, now)
		fmt.Fprintf(w, `{"lastUpdated": %q,"currentTime": %q}`, last, now)
	})
	return mux
}

// writeStatus writes the headers and returns the lastUpdated to report. Like
// kube-proxy, a healthy answer reports the current time: older releases bumped
// lastUpdated on every sync even when nothing changed, and clients rely on a
// healthy proxy's lastUpdated being recent.
func writeStatus(w http.ResponseWriter, ok bool, lastUpdated, now time.Time) time.Time {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		return lastUpdated
	}
	w.WriteHeader(http.StatusOK)
	return now
}
