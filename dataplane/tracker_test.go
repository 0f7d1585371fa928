package dataplane

import (
	"maps"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testNode(ips ...string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{v1.LabelTopologyZone: "zone-a"}}}
	for _, ip := range ips {
		n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip})
	}
	return n
}

// syncedTracker returns a tracker with node-a and every source synced, and the
// state after taking the initial changes.
func syncedTracker(t *testing.T, objs ...any) (*Tracker, *State) {
	t.Helper()
	tr := NewTracker(cfgWith(func(c *Config) { c.LocalhostNodePorts = false }), nil)
	tr.SetNode(testNode("192.168.0.2"))
	for _, o := range objs {
		switch o := o.(type) {
		case *v1.Service:
			tr.UpsertService(o)
		case *discovery.EndpointSlice:
			tr.UpsertEndpointSlice(o)
		}
	}
	for _, s := range []Source{SourceServices, SourceEndpointSlices, SourceNode} {
		tr.SetSynced(s)
	}
	st := NewState()
	st.Apply(tr.Take().Services)
	return tr, st
}

func keys(cs *ChangeSet) []string {
	var out []string
	for k := range cs.Frontends {
		out = append(out, k.String())
	}
	slices.Sort(out)
	return out
}

func TestChangeTracking(t *testing.T) {
	web := svc("web", nodePort(30080))
	tr, st := syncedTracker(t, web, slice("web-1", 8080, "10.1.0.1"), svc("db", clusterIPs("172.30.0.2")))
	if len(st.Frontends) != 3 {
		t.Fatalf("want 3 frontends, got %d", len(st.Frontends))
	}

	t.Run("a no-op update yields an empty change set", func(t *testing.T) {
		again := web.DeepCopy()
		again.ResourceVersion = "2"
		again.Annotations = map[string]string{"unrelated": "x"}
		tr.UpsertService(again)
		s := slice("web-1", 8080, "10.1.0.1")
		s.ResourceVersion = "7"
		tr.UpsertEndpointSlice(s)
		cs := st.Apply(tr.Take().Services)
		if !cs.Empty() {
			t.Errorf("no-op update changed %v %v", keys(cs), cs.Services)
		}
	})

	t.Run("an endpoint change touches only that service's frontends", func(t *testing.T) {
		tr.UpsertEndpointSlice(slice("web-1", 8080, "10.1.0.1", "10.1.0.2"))
		ch := tr.Take()
		if ch.EndpointChanges != 1 || ch.ServiceChanges != 0 || len(ch.Services) != 1 {
			t.Errorf("changes %+v", ch)
		}
		cs := st.Apply(ch.Services)
		want := []string{"172.30.0.1:80/TCP", "192.168.0.2:30080/TCP"}
		if got := keys(cs); !slices.Equal(got, want) {
			t.Errorf("changed %v, want %v", got, want)
		}
		if got := len(st.Frontends[FrontendKey{mustAddr("172.30.0.1"), 80, TCP}].Pod.Backends); got != 2 {
			t.Errorf("backends %d", got)
		}
	})

	t.Run("an update and its reversal before a sync drop out", func(t *testing.T) {
		tr.UpsertEndpointSlice(slice("web-1", 8080, "10.1.0.1"))
		tr.UpsertEndpointSlice(slice("web-1", 8080, "10.1.0.1", "10.1.0.2"))
		if cs := st.Apply(tr.Take().Services); !cs.Empty() {
			t.Errorf("reverted change still changed %v", keys(cs))
		}
	})

	t.Run("deleting a service removes its frontends", func(t *testing.T) {
		tr.DeleteService(svc("db"))
		cs := st.Apply(tr.Take().Services)
		if got := keys(cs); !slices.Equal(got, []string{"172.30.0.2:80/TCP"}) {
			t.Errorf("changed %v", got)
		}
		if _, ok := st.Frontends[FrontendKey{mustAddr("172.30.0.2"), 80, TCP}]; ok {
			t.Error("deleted service still has a frontend")
		}
	})

	t.Run("a slice moving to another service leaves the old one", func(t *testing.T) {
		tr.UpsertService(svc("api", clusterIPs("172.30.0.3")))
		moved := slice("web-1", 8080, "10.1.0.1", "10.1.0.2")
		moved.Labels[LabelServiceName] = "api"
		tr.UpsertEndpointSlice(moved)
		ch := tr.Take()
		if _, ok := ch.Services[ServiceName{"ns", "web"}]; !ok {
			t.Error("web was not recomputed")
		}
		st.Apply(ch.Services)
		if v := st.Frontends[FrontendKey{mustAddr("172.30.0.1"), 80, TCP}].Pod.Verdict; v != Reject {
			t.Errorf("web keeps endpoints: %v", v)
		}
		if v := st.Frontends[FrontendKey{mustAddr("172.30.0.3"), 80, TCP}].Pod.Verdict; v != Forward {
			t.Errorf("api has no endpoints: %v", v)
		}
	})

	t.Run("a node address change recomputes everything", func(t *testing.T) {
		tr.SetNode(testNode("192.168.0.9"))
		ch := tr.Take()
		if !ch.All || len(ch.Services) != 2 {
			t.Errorf("All=%v services=%d", ch.All, len(ch.Services))
		}
		cs := st.Apply(ch.Services)
		want := []string{"192.168.0.2:30080/TCP", "192.168.0.9:30080/TCP"}
		if got := keys(cs); !slices.Equal(got, want) {
			t.Errorf("changed %v, want %v", got, want)
		}
	})

	t.Run("Diff of equal states is empty", func(t *testing.T) {
		again := NewState()
		again.Apply(maps.Clone(st.Services))
		if cs := Diff(st, again); !cs.Empty() {
			t.Errorf("diff %v", keys(cs))
		}
		again.Apply(map[ServiceName]*ServiceState{{"ns", "api"}: nil})
		if got := keys(Diff(st, again)); !slices.Equal(got, []string{"172.30.0.3:80/TCP"}) {
			t.Errorf("diff %v", got)
		}
	})
}

func TestFrontendConflict(t *testing.T) {
	a := svc("a", func(s *v1.Service) { s.Spec.ExternalIPs = []string{"198.51.100.9"} })
	b := svc("b", clusterIPs("172.30.0.2"), func(s *v1.Service) { s.Spec.ExternalIPs = []string{"198.51.100.9"} })
	tr, st := syncedTracker(t, b)
	key := FrontendKey{mustAddr("198.51.100.9"), 80, TCP}
	if st.Frontends[key].Service.Name != "b" {
		t.Fatal("b should own the external IP alone")
	}
	tr.UpsertService(a)
	cs := st.Apply(tr.Take().Services)
	if st.Frontends[key].Service.Name != "a" {
		t.Error("the first service in name order owns a contested key")
	}
	if ps := cs.Problems[ServiceName{"ns", "b"}]; len(ps) != 1 || ps[0].Reason != "FrontendConflict" {
		t.Errorf("the loser is told: %+v", cs.Problems)
	}
	tr.DeleteService(a)
	st.Apply(tr.Take().Services)
	if f := st.Frontends[key]; f == nil || f.Service.Name != "b" {
		t.Error("b gets the key back when a goes")
	}
}

func TestTrackerSyncGate(t *testing.T) {
	kicks := 0
	tr := NewTracker(cfgWith(), func() { kicks++ })
	tr.UpsertService(svc("web"))
	tr.SetSynced(SourceServices)
	tr.SetSynced(SourceEndpointSlices)
	if tr.HasSynced() {
		t.Error("synced before the node source")
	}
	tr.SetSynced(SourceNode)
	if !tr.HasSynced() {
		t.Error("not synced after all sources")
	}
	if kicks != 4 {
		t.Errorf("kicks %d, want 4", kicks)
	}
	s := slice("web-1", 8080, "10.1.0.1")
	s.Annotations = map[string]string{AnnotationTriggerTime: "2026-11-23T10:00:00Z"}
	tr.UpsertEndpointSlice(s)
	if ch := tr.Take(); len(ch.TriggerTimes) != 1 {
		t.Errorf("trigger times %v", ch.TriggerTimes)
	}
	unowned := slice("x", 80, "10.1.0.9")
	delete(unowned.Labels, LabelServiceName)
	tr.UpsertEndpointSlice(unowned)
	if s, e := tr.Pending(); s != 0 || e != 0 {
		t.Errorf("a slice without a service is pending: %d %d", s, e)
	}
}
