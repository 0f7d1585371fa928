package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
)

// fakeBackend keeps what it was told, as a kernel would, and can be made to fail.
type fakeBackend struct {
	mu         sync.Mutex
	programmed map[FrontendKey]FrontendState
	syncs      chan *ChangeSet // one per Sync call; nil for a full sync
	failNext   int
	// refuse makes Sync leave these frontends out and say so.
	refuse map[FrontendKey]bool
	// held, when set, makes Sync signal on it and wait for its context to end,
	// as a backend in the middle of a long restore does.
	held chan struct{}
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{programmed: map[FrontendKey]FrontendState{}, syncs: make(chan *ChangeSet, 100)}
}

func (f *fakeBackend) Name() string                  { return "fake" }
func (f *fakeBackend) Cleanup(context.Context) error { return nil }

func (f *fakeBackend) Sync(ctx context.Context, st *State, cs *ChangeSet) error {
	if held := f.holding(); held != nil {
		held <- struct{}{}
		<-ctx.Done()
		return fmt.Errorf("restore stopped: %w", ctx.Err())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	defer func() { f.syncs <- cs }()
	if f.failNext > 0 {
		f.failNext--
		return errors.New("injected failure")
	}
	if cs == nil {
		clear(f.programmed)
		for k, v := range st.Frontends {
			f.programmed[k] = *v
		}
		return nil
	}
	rejected := FrontendErrors{}
	for k := range cs.Frontends {
		if f.refuse[k] {
			rejected[k] = errors.New(k.String() + ": map full")
			continue
		}
		if v, ok := st.Frontends[k]; ok {
			f.programmed[k] = *v
		} else {
			delete(f.programmed, k)
		}
	}
	if len(rejected) > 0 {
		return rejected
	}
	return nil
}

func (f *fakeBackend) holding() chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held
}

func (f *fakeBackend) next(t *testing.T) *ChangeSet {
	t.Helper()
	select {
	case cs := <-f.syncs:
		return cs
	case <-time.After(10 * time.Second):
		t.Fatal("no sync happened")
		return nil
	}
}

func (f *fakeBackend) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.programmed)
}

type runnerFixture struct {
	tr      *Tracker
	r       *Runner
	be      *fakeBackend
	metrics *Metrics
	cancel  func()
	done    chan error
}

func startRunner(t *testing.T, rc RunnerConfig) *runnerFixture {
	t.Helper()
	fx := &runnerFixture{be: newFakeBackend(), done: make(chan error, 1)}
	fx.metrics = NewMetrics(prometheus.NewRegistry())
	rc.Metrics = fx.metrics
	fx.tr = NewTracker(cfgWith(func(c *Config) { c.LocalhostNodePorts = false }), func() { fx.r.Kick() })
	fx.r = NewRunner(fx.be, fx.tr, rc)
	ctx, cancel := context.WithCancel(context.Background())
	fx.cancel = cancel
	go func() { fx.done <- fx.r.Run(ctx, false) }()
	t.Cleanup(func() {
		cancel()
		<-fx.done
	})
	return fx
}

func (fx *runnerFixture) syncAll() {
	fx.tr.SetNode(testNode("192.168.0.2"))
	for _, s := range []Source{SourceServices, SourceEndpointSlices, SourceNode} {
		fx.tr.SetSynced(s)
	}
}

func TestRunnerProgramsNothingBeforeSourcesSync(t *testing.T) {
	fx := startRunner(t, RunnerConfig{SyncPeriod: time.Hour})
	fx.tr.UpsertService(svc("web"))
	fx.tr.SetSynced(SourceServices)
	fx.tr.SetSynced(SourceEndpointSlices)
	select {
	case <-fx.be.syncs:
		t.Fatal("synced before the node source synced")
	case <-time.After(300 * time.Millisecond):
	}
	fx.tr.SetSynced(SourceNode)
	if cs := fx.be.next(t); cs != nil {
		t.Errorf("the first sync must be full, got a partial one")
	}
	if fx.be.count() != 1 {
		t.Errorf("programmed %d frontends, want 1", fx.be.count())
	}
}

func TestRunnerPartialSyncsAndFailures(t *testing.T) {
	fx := startRunner(t, RunnerConfig{SyncPeriod: time.Hour})
	fx.tr.UpsertService(svc("web"))
	fx.syncAll()
	fx.be.next(t) // the initial full sync

	s := slice("web-1", 8080, "10.1.0.1")
	s.Annotations = map[string]string{AnnotationTriggerTime: time.Now().Add(-time.Second).Format(time.RFC3339Nano)}
	fx.tr.UpsertEndpointSlice(s)
	cs := fx.be.next(t)
	if cs == nil || len(cs.Frontends) != 1 {
		t.Fatalf("want a partial sync of one frontend, got %+v", cs)
	}
	if n := testutil.CollectAndCount(fx.metrics.NetworkProgramming); n != 1 {
		t.Errorf("network programming latency series: %d", n)
	}
	if v := testutil.ToFloat64(fx.metrics.EndpointChangesTot); v != 1 {
		t.Errorf("endpoint changes total %v", v)
	}

	fx.be.mu.Lock()
	fx.be.failNext = 2
	fx.be.mu.Unlock()
	fx.tr.UpsertService(svc("db", clusterIPs("172.30.0.2")))
	if cs := fx.be.next(t); cs == nil {
		t.Error("the failing sync was a partial one")
	}
	// Retries come by themselves, with backoff, and are full syncs.
	if cs := fx.be.next(t); cs != nil {
		t.Error("the retry after a failure must be full")
	}
	if cs := fx.be.next(t); cs != nil {
		t.Error("the retry after the second failure must be full")
	}
	if fx.be.count() != 2 {
		t.Errorf("programmed %d frontends after recovery, want 2", fx.be.count())
	}
	if v := testutil.ToFloat64(fx.metrics.SyncErrors); v != 2 {
		t.Errorf("sync errors %v", v)
	}
}

func TestRunnerCoalescesAndResyncs(t *testing.T) {
	fx := startRunner(t, RunnerConfig{MinSyncPeriod: 500 * time.Millisecond, SyncPeriod: 2 * time.Second})
	fx.syncAll()
	fx.be.next(t)
	for i := 0; i < 50; i++ {
		fx.tr.UpsertService(svc("web", func(s *v1.Service) { s.Spec.Ports[0].Port = int32(1000 + i) }))
	}
	fx.be.next(t)
	// The burst arrived within the minimum interval of the first sync, so it is
	// applied in at most two syncs.
	time.Sleep(700 * time.Millisecond)
	if n := len(fx.be.syncs); n > 1 {
		t.Errorf("50 changes took %d more syncs", n)
	}
	for len(fx.be.syncs) > 0 {
		fx.be.next(t)
	}
	// With nothing happening, the periodic sync is a full one.
	if cs := fx.be.next(t); cs != nil {
		t.Error("the periodic sync must be full")
	}
	if p := fx.r.State().Frontends[FrontendKey{mustAddr("172.30.0.1"), 1049, TCP}]; p == nil {
		t.Error("the last change of the burst is not in the state")
	}
}

func TestRunOnceAndPrint(t *testing.T) {
	var out bytes.Buffer
	tr := NewTracker(cfgWith(func(c *Config) { c.LocalhostNodePorts = false }), nil)
	r := NewRunner(NewPrintBackend(&out), tr, RunnerConfig{})
	tr.UpsertService(svc("web", nodePort(30080), etpLocal))
	tr.UpsertService(svc("bad", clusterIPs("172.30.0.9"), nodePort(99)))
	tr.UpsertEndpointSlice(slice("web-1", 8080, "10.1.0.1/l", "10.1.0.2"))
	tr.SetNode(testNode("192.168.0.2"))
	for _, s := range []Source{SourceServices, SourceEndpointSlices, SourceNode} {
		tr.SetSynced(s)
	}
	var problems []string
	r.hooks.Problems = func(n ServiceName, ps []Problem) { problems = append(problems, n.String()+" "+ps[0].Reason) }
	if err := r.Run(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"SERVICE TYPE FRONTEND FROM POD FROM NODE FROM OUTSIDE OPTIONS",
		"ns/web:p80/TCP NodePort 192.168.0.2:30080/TCP 10.1.0.1:8080(L),10.1.0.2:8080 10.1.0.1:8080(L),10.1.0.2:8080 +masq 10.1.0.1:8080(L) eTP=Local",
		"! ns/bad NodePortOutOfRange",
	} {
		if !strings.Contains(strings.Join(strings.Fields(out.String()), " "), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if len(problems) != 1 || problems[0] != "ns/bad NodePortOutOfRange" {
		t.Errorf("problems reported: %v", problems)
	}
}

// A steady stream of changes does not put the periodic full sync off.
func TestRunnerResyncsUnderChurn(t *testing.T) {
	fx := startRunner(t, RunnerConfig{SyncPeriod: time.Second})
	fx.syncAll()
	fx.be.next(t) // the initial full sync
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				fx.tr.UpsertService(svc("web", func(s *v1.Service) { s.Spec.Ports[0].Port = int32(2000 + i) }))
			}
		}
	}()
	defer func() { close(stop); <-done }()
	for n := 0; n < 200; n++ { // about 10 s of partial syncs at most
		if cs := fx.be.next(t); cs == nil {
			return // the periodic full sync came through
		}
	}
	t.Error("no full sync among 200 syncs under churn")
}

// A frontend the backend refuses for its own input is reported on its service;
// the sync still counts as a success, so nothing is retried in a loop.
func TestRunnerReportsRefusedFrontends(t *testing.T) {
	var mu sync.Mutex
	var problems []string
	fx := startRunner(t, RunnerConfig{SyncPeriod: time.Hour, Hooks: Hooks{Problems: func(n ServiceName, ps []Problem) {
		mu.Lock()
		defer mu.Unlock()
		problems = append(problems, n.String()+" "+ps[0].Reason)
	}}})
	fx.syncAll()
	fx.be.next(t)
	fx.be.mu.Lock()
	fx.be.refuse = map[FrontendKey]bool{{Addr: mustAddr("172.30.0.9"), Port: 80, Protocol: TCP}: true}
	fx.be.mu.Unlock()
	fx.tr.UpsertService(svc("big", clusterIPs("172.30.0.9")))
	fx.tr.UpsertService(svc("web"))
	got := 0
	for got < 2 {
		cs := fx.be.next(t)
		if cs == nil {
			t.Fatal("a full sync: the refusal was taken for a failure")
		}
		got += len(cs.Frontends)
	}
	select {
	case cs := <-fx.be.syncs:
		t.Errorf("a refused frontend made the runner sync again (%v)", cs)
	case <-time.After(500 * time.Millisecond):
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) != 1 || problems[0] != "ns/big FrontendNotProgrammed" {
		t.Errorf("problems %v", problems)
	}
	if v := testutil.ToFloat64(fx.metrics.Rejected); v != 1 {
		t.Errorf("switchyard_frontends_not_programmed %v", v)
	}
	if v := testutil.ToFloat64(fx.metrics.SyncErrors); v != 0 {
		t.Errorf("sync errors %v", v)
	}
}

// A shutdown during a sync (ctx canceled while the backend works) ends Run at
// once, without counting a sync error or retrying.
func TestRunnerStopsDuringASync(t *testing.T) {
	fx := startRunner(t, RunnerConfig{SyncPeriod: time.Hour})
	fx.syncAll()
	fx.be.next(t) // the initial full sync
	held := make(chan struct{}, 1)
	fx.be.mu.Lock()
	fx.be.held = held
	fx.be.mu.Unlock()
	fx.tr.UpsertService(svc("web"))
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("no sync started")
	}
	fx.cancel()
	select {
	case err := <-fx.done:
		fx.done <- err // for the cleanup
		if err != nil {
			t.Errorf("Run = %v, want nil: a shutdown is no failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was canceled")
	}
	if v := testutil.ToFloat64(fx.metrics.SyncErrors); v != 0 {
		t.Errorf("sync errors %v: the shutdown counted as a failed sync", v)
	}
}

// A dry run stopped during its sync says it did not finish.
func TestRunOnceStoppedDuringItsSync(t *testing.T) {
	be := newFakeBackend()
	be.held = make(chan struct{}, 1)
	tr := NewTracker(cfgWith(func(c *Config) { c.LocalhostNodePorts = false }), nil)
	r := NewRunner(be, tr, RunnerConfig{})
	tr.SetNode(testNode("192.168.0.2"))
	for _, s := range []Source{SourceServices, SourceEndpointSlices, SourceNode} {
		tr.SetSynced(s)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, true) }()
	<-be.held
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run once = %v, want an error wrapping context.Canceled", err)
	}
}
