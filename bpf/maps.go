package bpf

import (
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Map is what the writer needs of one BPF hash map: the narrow kernel boundary,
// so the writer can be tested against FakeMap.
type Map[K comparable, V any] interface {
	Put(K, V) error
	Delete(K) error
	// All returns every entry; the writer reads the kernel back on full syncs
	// (restart recovery and drift repair).
	All() (map[K]V, error)
}

// kernelMap adapts an *ebpf.Map.
type kernelMap[K comparable, V any] struct{ m *ebpf.Map }

// NewKernelMap wraps a loaded map whose key and value types are K and V.
func NewKernelMap[K comparable, V any](m *ebpf.Map) Map[K, V] { return kernelMap[K, V]{m} }

func (k kernelMap[K, V]) Put(key K, val V) error {
	if err := k.m.Update(&key, &val, ebpf.UpdateAny); err != nil {
		if isFull(err) {
			return fmt.Errorf("map %s is full (%d entries): %w", k.m.String(), k.m.MaxEntries(), err)
		}
		return fmt.Errorf("map %s: update: %w", k.m.String(), err)
	}
	return nil
}

func (k kernelMap[K, V]) Delete(key K) error {
	if err := k.m.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("map %s: delete: %w", k.m.String(), err)
	}
	return nil
}

func (k kernelMap[K, V]) All() (map[K]V, error) {
	out := map[K]V{}
	if err := k.Each(func(key K, val V) bool { out[key] = val; return true }); err != nil {
		return nil, err
	}
	return out, nil
}

// Each calls fn for every entry until it returns false.
func (k kernelMap[K, V]) Each(fn func(K, V) bool) error {
	var key K
	var val V
	it := k.m.Iterate()
	for it.Next(&key, &val) {
		if !fn(key, val) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("map %s: iterate: %w", k.m.String(), err)
	}
	return nil
}

// Get looks up one key; ok is false when it is not there.
func (k kernelMap[K, V]) Get(key K) (V, bool, error) {
	var v V
	err := k.m.Lookup(&key, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return v, false, nil
	}
	if err != nil {
		return v, false, fmt.Errorf("map %s: lookup: %w", k.m.String(), err)
	}
	return v, true, nil
}

// FakeMap keeps real state like a BPF hash map, with a capacity, and can fail
// writes on demand: a stateful fake for unit tests.
type FakeMap[K comparable, V any] struct {
	mu         sync.Mutex
	entries    map[K]V
	MaxEntries int
	// Fail, when set, is asked before every Put and Delete; an error fails the call
	// and leaves the entries untouched.
	Fail func(op string, key K) error
}

// NewFakeMap returns an empty fake map holding at most max entries.
func NewFakeMap[K comparable, V any](max int) *FakeMap[K, V] {
	return &FakeMap[K, V]{entries: map[K]V{}, MaxEntries: max}
}

func (f *FakeMap[K, V]) Put(k K, v V) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		if err := f.Fail("put", k); err != nil {
			return err
		}
	}
	if _, ok := f.entries[k]; !ok && len(f.entries) >= f.MaxEntries {
		return fmt.Errorf("fake map is full (%d entries): %w", f.MaxEntries, errFull)
	}
	f.entries[k] = v
	return nil
}

func (f *FakeMap[K, V]) Delete(k K) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		if err := f.Fail("delete", k); err != nil {
			return err
		}
	}
	delete(f.entries, k)
	return nil
}

func (f *FakeMap[K, V]) All() (map[K]V, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.entries), nil
}

// Each calls fn for every entry (of a snapshot) until it returns false.
func (f *FakeMap[K, V]) Each(fn func(K, V) bool) error {
	all, _ := f.All()
	for k, v := range all {
		if !fn(k, v) {
			break
		}
	}
	return nil
}

// Get looks up one key.
func (f *FakeMap[K, V]) Get(k K) (V, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.entries[k]
	return v, ok, nil
}

// Len is the number of entries.
func (f *FakeMap[K, V]) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.entries)
}

var errFull = errors.New("no space left in map")

// isFull: a hash map at max_entries refuses new keys with E2BIG.
func isFull(err error) bool { return errors.Is(err, errFull) || errors.Is(err, unix.E2BIG) }
