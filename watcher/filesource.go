package watcher

import (
	"context"
	"crypto/sha256"
	"maps"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/dataplane"
)

// FileSource feeds a sink from manifest files instead of the API server, for
// clusterless testing and demos. A set of files is applied whole or not at all.
type FileSource struct {
	path, nodeName string
	sink           Sink
	interval       time.Duration

	mu      sync.Mutex
	lastErr error

	// hash is of the files last read, good or bad, so a bad set is reported once.
	hash    [sha256.Size]byte
	hashed  bool
	applied *fileState // nil until the first good read
	cache   docCache   // the documents of the last good read, decoded
}

// fileState is the set of objects last given to the sink.
type fileState struct {
	services map[string]*v1.Service
	slices   map[string]*discovery.EndpointSlice
	node     *v1.Node
}

// NewFileSource returns a source reading path (see Load) every interval (1s if
// not positive) and feeding sink; nodeName picks this node's Node.
func NewFileSource(path, nodeName string, sink Sink, interval time.Duration) *FileSource {
	if interval <= 0 {
		interval = time.Second
	}
	return &FileSource{path: path, nodeName: nodeName, sink: sink, interval: interval}
}

// Run polls the files until ctx is done. Bad files do not stop it: they are
// logged, reported by LastError, and the last good set stays in force.
func (f *FileSource) Run(ctx context.Context) error {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		f.poll()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// LastError returns why the latest read was rejected, or nil if it was applied.
func (f *FileSource) LastError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

func (f *FileSource) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// A missing path fails every poll; log it when it starts, not every second.
	if err != nil && (f.lastErr == nil || f.lastErr.Error() != err.Error()) {
		klog.ErrorS(err, "Manifests rejected; keeping the last good set", "path", f.path)
	}
	f.lastErr = err
}

// poll reads the files once and applies them if they changed.
func (f *FileSource) poll() {
	ms, err := readManifests(f.path)
	if err != nil {
		f.hashed = false // files that come back unchanged must still clear the error
		f.setErr(err)
		return
	}
	h := hashManifests(ms)
	if f.hashed && h == f.hash {
		return
	}
	f.hash, f.hashed = h, true
	objs, cache, err := parseManifests(ms, f.cache)
	if err != nil {
		f.setErr(err)
		return
	}
	f.cache = cache
	f.apply(f.state(objs))
	f.setErr(nil)
}

func (f *FileSource) state(objs *Objects) *fileState {
	st := &fileState{services: map[string]*v1.Service{}, slices: map[string]*discovery.EndpointSlice{}}
	for _, s := range objs.Services {
		st.services[s.Namespace+"/"+s.Name] = s
	}
	for _, s := range objs.EndpointSlices {
		st.slices[s.Namespace+"/"+s.Name] = s
	}
	for _, n := range objs.Nodes {
		if n.Name == f.nodeName {
			st.node = n
		}
	}
	return st
}

// apply gives the sink the difference between the applied state and st.
func (f *FileSource) apply(st *fileState) {
	old := f.applied
	first := old == nil
	if first {
		old = &fileState{}
	}
	diff(old.services, st.services, f.sink.UpsertService, f.sink.DeleteService)
	diff(old.slices, st.slices, f.sink.UpsertEndpointSlice, f.sink.DeleteEndpointSlice)
	if first || !equality.Semantic.DeepEqual(old.node, st.node) {
		f.sink.SetNode(st.node)
	}
	f.applied = st
	if first {
		f.sink.SetSynced(dataplane.SourceServices)
		f.sink.SetSynced(dataplane.SourceEndpointSlices)
		f.sink.SetSynced(dataplane.SourceNode)
	}
}

// diff calls upsert for new and changed objects and del for removed ones, in key
// order so that runs are reproducible.
func diff[T any](old, cur map[string]*T, upsert, del func(*T)) {
	for _, k := range slices.Sorted(maps.Keys(cur)) {
		// An unchanged document keeps its object, so most compare as pointers.
		if o, ok := old[k]; !ok || (o != cur[k] && !equality.Semantic.DeepEqual(o, cur[k])) {
			upsert(cur[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(old)) {
		if _, ok := cur[k]; !ok {
			del(old[k])
		}
	}
}
