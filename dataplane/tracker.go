package dataplane

import (
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

const (
	// LabelServiceName ties an EndpointSlice to its Service.
	LabelServiceName = discovery.LabelServiceName
	// AnnotationTriggerTime is when the change an EndpointSlice reflects happened; the
	// network programming latency metric is measured from it.
	AnnotationTriggerTime = v1.EndpointsLastChangeTriggerTime
)

// Source names the informers the tracker waits for before anything is programmed.
type Source string

const (
	SourceServices       Source = "services"
	SourceEndpointSlices Source = "endpointslices"
	SourceNode           Source = "node"
)

// Tracker receives Services, EndpointSlices and the Node from a watcher and records
// which services changed, in the style of kube-proxy's change trackers: events only
// record, the sync computes. It is safe for concurrent use.
type Tracker struct {
	mu       sync.Mutex
	cfg      Config
	node     *v1.Node
	services map[ServiceName]*v1.Service
	slices   map[ServiceName]map[string]*discovery.EndpointSlice
	// sliceOwner remembers which service a slice was filed under, so a slice whose
	// service-name label changes leaves its old service.
	sliceOwner map[string]ServiceName

	svcDirty, epDirty map[ServiceName]struct{}
	nodeDirty         bool
	triggerTimes      []time.Time
	synced            map[Source]bool
	svcTotal, epTotal int

	kick func()
}

// NewTracker returns a tracker for the node named cfg.NodeName. kick is called
// (without the lock held) after every recorded change; it must not block.
func NewTracker(cfg Config, kick func()) *Tracker {
	if kick == nil {
		kick = func() {}
	}
	return &Tracker{
		cfg:        cfg,
		services:   map[ServiceName]*v1.Service{},
		slices:     map[ServiceName]map[string]*discovery.EndpointSlice{},
		sliceOwner: map[string]ServiceName{},
		svcDirty:   map[ServiceName]struct{}{},
		epDirty:    map[ServiceName]struct{}{},
		synced:     map[Source]bool{SourceServices: false, SourceEndpointSlices: false, SourceNode: false},
		kick:       kick,
	}
}

func (t *Tracker) record(f func() bool) {
	t.mu.Lock()
	changed := f()
	t.mu.Unlock()
	if changed {
		t.kick()
	}
}

// UpsertService records an added or updated Service.
func (t *Tracker) UpsertService(svc *v1.Service) {
	n := ServiceName{svc.Namespace, svc.Name}
	t.record(func() bool {
		if old := t.services[n]; old != nil && equality.Semantic.DeepEqual(old.Spec, svc.Spec) &&
			equality.Semantic.DeepEqual(old.Status, svc.Status) && equality.Semantic.DeepEqual(old.Labels, svc.Labels) {
			return false // a resync or an update of fields the model does not read
		}
		t.services[n] = svc
		t.svcDirty[n] = struct{}{}
		t.svcTotal++
		return true
	})
}

// DeleteService records a deleted Service.
func (t *Tracker) DeleteService(svc *v1.Service) {
	n := ServiceName{svc.Namespace, svc.Name}
	t.record(func() bool {
		if _, ok := t.services[n]; !ok {
			return false
		}
		delete(t.services, n)
		t.svcDirty[n] = struct{}{}
		t.svcTotal++
		return true
	})
}

func sliceKey(s *discovery.EndpointSlice) string { return s.Namespace + "/" + s.Name }

// UpsertEndpointSlice records an added or updated EndpointSlice. Slices without the
// kubernetes.io/service-name label belong to no service and are ignored.
func (t *Tracker) UpsertEndpointSlice(s *discovery.EndpointSlice) {
	key := sliceKey(s)
	t.record(func() bool {
		owner, hadOwner := t.sliceOwner[key]
		if hadOwner {
			if old := t.slices[owner][s.Name]; old != nil && old.AddressType == s.AddressType &&
				equality.Semantic.DeepEqual(old.Endpoints, s.Endpoints) && equality.Semantic.DeepEqual(old.Ports, s.Ports) &&
				equality.Semantic.DeepEqual(old.Labels, s.Labels) {
				return false
			}
			t.removeSlice(key, owner, s.Name)
		}
		svc := s.Labels[LabelServiceName]
		if svc == "" {
			return hadOwner
		}
		n := ServiceName{s.Namespace, svc}
		if t.slices[n] == nil {
			t.slices[n] = map[string]*discovery.EndpointSlice{}
		}
		t.slices[n][s.Name] = s
		t.sliceOwner[key] = n
		t.epDirty[n] = struct{}{}
		t.epTotal++
		if ts, err := time.Parse(time.RFC3339Nano, s.Annotations[AnnotationTriggerTime]); err == nil {
			t.triggerTimes = append(t.triggerTimes, ts)
		}
		return true
	})
}

// DeleteEndpointSlice records a deleted EndpointSlice.
func (t *Tracker) DeleteEndpointSlice(s *discovery.EndpointSlice) {
	key := sliceKey(s)
	t.record(func() bool {
		owner, ok := t.sliceOwner[key]
		if !ok {
			return false
		}
		t.removeSlice(key, owner, s.Name)
		t.epTotal++
		return true
	})
}

func (t *Tracker) removeSlice(key string, owner ServiceName, name string) {
	delete(t.slices[owner], name)
	if len(t.slices[owner]) == 0 {
		delete(t.slices, owner)
	}
	delete(t.sliceOwner, key)
	t.epDirty[owner] = struct{}{}
}

// SetNode records this node's Node object (nil once it is deleted). A change that
// the model reads (addresses, zone, eligibility) recomputes every service.
func (t *Tracker) SetNode(n *v1.Node) {
	t.record(func() bool {
		old := NodeInfoFromNode(t.cfg.NodeName, t.node)
		t.node = n
		if old.Equal(NodeInfoFromNode(t.cfg.NodeName, n)) {
			return false
		}
		t.nodeDirty = true
		return true
	})
}

// SetSynced records that a source delivered its initial list.
func (t *Tracker) SetSynced(s Source) {
	t.record(func() bool {
		if t.synced[s] {
			return false
		}
		t.synced[s] = true
		return true
	})
}

// HasSynced reports whether every source has delivered its initial list; nothing
// may be programmed before.
func (t *Tracker) HasSynced() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ok := range t.synced {
		if !ok {
			return false
		}
	}
	return true
}

// Pending counts the services with unsynced service and endpoint changes.
func (t *Tracker) Pending() (services, endpoints int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.svcDirty), len(t.epDirty)
}

// Changes is what a sync takes from the tracker.
type Changes struct {
	// All: the node changed, so Services holds every service.
	All  bool
	Node NodeInfo
	// Services maps every changed service to its recomputed state (nil if gone).
	Services map[ServiceName]*ServiceState
	// ServiceChanges and EndpointChanges count the events behind this sync.
	ServiceChanges, EndpointChanges int
	// TriggerTimes are the EndpointSlice trigger times seen since the last take.
	TriggerTimes []time.Time
}

// Take computes the state of every service that changed since the last Take and
// resets the record. When the node changed it recomputes everything.
func (t *Tracker) Take() Changes {
	t.mu.Lock()
	defer t.mu.Unlock()
	node := NodeInfoFromNode(t.cfg.NodeName, t.node)
	ch := Changes{
		All: t.nodeDirty, Node: node,
		ServiceChanges: t.svcTotal, EndpointChanges: t.epTotal, TriggerTimes: t.triggerTimes,
		Services: map[ServiceName]*ServiceState{},
	}
	dirty := map[ServiceName]struct{}{}
	if ch.All {
		for n := range t.services {
			dirty[n] = struct{}{}
		}
	}
	for n := range t.svcDirty {
		dirty[n] = struct{}{}
	}
	for n := range t.epDirty {
		dirty[n] = struct{}{}
	}
	for n := range dirty {
		ch.Services[n] = ComputeService(t.services[n], t.sliceList(n), node, t.cfg)
	}
	clear(t.svcDirty)
	clear(t.epDirty)
	t.nodeDirty, t.triggerTimes, t.svcTotal, t.epTotal = false, nil, 0, 0
	return ch
}

func (t *Tracker) sliceList(n ServiceName) []*discovery.EndpointSlice {
	m := t.slices[n]
	out := make([]*discovery.EndpointSlice, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	return out
}
