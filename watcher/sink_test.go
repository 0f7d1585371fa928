package watcher

import (
	"slices"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/switchyard/switchyard/dataplane"
)

// recSink records sink calls as strings such as "upsert service default/web", and
// the last object each call carried.
type recSink struct {
	mu    sync.Mutex
	calls []string
	objs  map[string]any
}

func newRecSink() *recSink { return &recSink{objs: map[string]any{}} }

func (s *recSink) add(call string, obj any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call)
	s.objs[call] = obj
}

func (s *recSink) UpsertService(o *v1.Service) { s.add("upsert service "+o.Namespace+"/"+o.Name, o) }
func (s *recSink) DeleteService(o *v1.Service) { s.add("delete service "+o.Namespace+"/"+o.Name, o) }
func (s *recSink) UpsertEndpointSlice(o *discovery.EndpointSlice) {
	s.add("upsert slice "+o.Namespace+"/"+o.Name, o)
}
func (s *recSink) DeleteEndpointSlice(o *discovery.EndpointSlice) {
	s.add("delete slice "+o.Namespace+"/"+o.Name, o)
}
func (s *recSink) SetSynced(src dataplane.Source) { s.add("synced "+string(src), nil) }
func (s *recSink) SetNode(n *v1.Node) {
	if n == nil {
		s.add("node <nil>", n)
		return
	}
	s.add("node "+n.Name, n)
}

// take returns the calls recorded since the last take.
func (s *recSink) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

func (s *recSink) count(call string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		if c == call {
			n++
		}
	}
	return n
}

func (s *recSink) obj(call string) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objs[call]
}

// waitFor polls until call has been recorded n times.
func (s *recSink) waitFor(t *testing.T, call string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.count(call) < n {
		if time.Now().After(deadline) {
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("timed out waiting for %d× %q; calls: %q", n, call, s.calls)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wantCalls(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("sink calls:\n got %q\nwant %q", got, want)
	}
}
