package bpf

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/switchyard/switchyard/dataplane"
)

// Service entry flags (svc_val.flags), as in lb.h.
const (
	svcFlagReject = 1
	svcFlagDrop   = 2
	svcFlagMasq   = 4
	svcFlagRanges = 8
)

// svc_key.scope: which route of a frontend an entry holds.
const (
	scopeSocket  = 0 // the Pod route: socket LB, and pods of other nodes through tc
	scopeOutside = 1 // the Outside route: tc, for clients outside the node
)

var scopes = [...]uint8{scopeSocket, scopeOutside}

// route is the frontend's route a scope's entries hold.
func route(f *dataplane.FrontendState, scope uint8) *dataplane.Route {
	if scope == scopeOutside {
		return &f.Outside
	}
	return &f.Pod
}

// scoped is one scope's entries of a frontend (or, with port 0, of an address).
type scoped struct {
	dataplane.FrontendKey
	scope uint8
}

// rangeKey is one loadBalancerSourceRanges entry of a service port.
type rangeKey struct {
	svcID  uint32
	prefix netip.Prefix
}

// Writer programs the socket-LB maps from the desired state. It keeps a cache of
// what the kernel holds, changed only after a write succeeded, and writes every
// frontend make-before-break (Cilium's order): backends, then slots, then the
// service entry with its backend count, then the stale slots are deleted.
type Writer struct {
	services Map[sockSvcKey, sockSvcVal]
	backends Map[uint32, sockBackend]
	ranges   Map[tcRangeKey, uint8]

	frontends map[scoped]*programmed
	ids       map[sockBackend]uint32 // backend -> stable id
	byID      map[uint32]sockBackend // every backend id in the kernel (duplicates found there too)
	refs      map[uint32]int         // backend id -> slots using it
	// unused are ids that may have lost their last slot: the only ones a sync
	// looks at to free backends, so a small change costs little at any scale.
	unused map[uint32]bool
	// allAddrs: after a kernel read, every address entry is checked once.
	allAddrs bool
	svcIDs   map[dataplane.ServicePort]uint32
	// cip counts the cluster IP frontends per address; addrs are the address-only
	// entries in the kernel, which refuse the ports a cluster IP does not serve.
	cip       map[netip.Addr]int
	addrs     map[scoped]bool
	nextID    uint32
	nextSvcID uint32
	slotCount int // slots in w.frontends, for the map pressure
	// Source ranges: how many frontends use each, which the kernel holds, and
	// those that may have lost their last user.
	rangeRefs   map[rangeKey]int
	rangesIn    map[rangeKey]bool
	rangesStale map[rangeKey]bool
	// removedUDP are UDP backends deleted since TakeRemovedUDP: sockets still
	// connected to them are to be destroyed.
	removedUDP []netip.AddrPort

	// Entries in the services and backends maps after the last Sync, for metrics
	// read from other goroutines.
	serviceEntries, backendEntries atomic.Int64
}

// programmed is one frontend as the kernel holds it.
type programmed struct {
	head      sockSvcVal
	slots     []uint32 // backend ids of slots 1..len
	clusterIP bool     // counted in Writer.cip (scope socket only)
	ranges    []rangeKey
}

// NewWriter returns a writer over the services, backends and source ranges maps.
func NewWriter(services Map[sockSvcKey, sockSvcVal], backends Map[uint32, sockBackend], ranges Map[tcRangeKey, uint8]) *Writer {
	return &Writer{
		services: services, backends: backends, ranges: ranges,
		frontends: map[scoped]*programmed{},
		ids:       map[sockBackend]uint32{}, byID: map[uint32]sockBackend{}, refs: map[uint32]int{}, unused: map[uint32]bool{},
		svcIDs: map[dataplane.ServicePort]uint32{}, nextID: 1, nextSvcID: 1,
		cip: map[netip.Addr]int{}, addrs: map[scoped]bool{},
		rangeRefs: map[rangeKey]int{}, rangesIn: map[rangeKey]bool{}, rangesStale: map[rangeKey]bool{},
	}
}

// Sync writes the changed frontends, or with changes nil, reads the kernel back
// and makes it match the whole state (restart recovery and drift repair). A
// frontend that cannot be written keeps what it had; the others go on, and the
// errors come back together. When ctx ends it stops between two frontends (each
// is written make-before-break, completely) and tidies up after those it wrote;
// the error then wraps ctx.Err().
func (w *Writer) Sync(ctx context.Context, st *dataplane.State, changes *dataplane.ChangeSet) error {
	var keys []dataplane.FrontendKey
	if changes == nil {
		if err := w.readKernel(); err != nil {
			return err
		}
		for k := range st.Frontends {
			keys = append(keys, k)
		}
		gone := map[dataplane.FrontendKey]bool{}
		for k := range w.frontends {
			if st.Frontends[k.FrontendKey] == nil && !gone[k.FrontendKey] {
				gone[k.FrontendKey] = true
				keys = append(keys, k.FrontendKey)
			}
		}
	} else {
		for k := range changes.Frontends {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareKeys)
	var errs []error
	rejected := dataplane.FrontendErrors{}
	for i, k := range keys {
		if cerr := ctx.Err(); cerr != nil {
			errs = append(errs, fmt.Errorf("stopped after %d of %d frontends: %w", i, len(keys), cerr))
			keys = keys[:i]
			break
		}
		var err error
		if f := st.Frontends[k]; f != nil {
			err = w.put(f)
		} else {
			err = w.remove(k)
		}
		switch {
		case err == nil:
		case isFull(err) || errors.Is(err, errTooManyBackends):
			rejected[k] = err // its own input: the others go on, the agent stays healthy
		default:
			errs = append(errs, err)
		}
	}
	errs = append(errs, w.syncAddrs(keys), w.releaseUnused(), w.releaseRanges())
	w.serviceEntries.Store(int64(len(w.frontends) + w.slotCount + len(w.addrs)))
	w.backendEntries.Store(int64(len(w.byID)))
	if err := errors.Join(errs...); err != nil {
		if len(rejected) > 0 {
			return errors.Join(err, rejected)
		}
		return err
	}
	if len(rejected) > 0 {
		return rejected
	}
	return nil
}

var errTooManyBackends = errors.New("more backends than a frontend can hold")

// TakeRemovedUDP returns the UDP backends deleted since the last call.
func (w *Writer) TakeRemovedUDP() []netip.AddrPort {
	r := w.removedUDP
	w.removedUDP = nil
	return r
}

// Entries are the entries the services and backends maps held after the last sync.
func (w *Writer) Entries() (services, backends int64) {
	return w.serviceEntries.Load(), w.backendEntries.Load()
}

// syncAddrs makes the address-only entries follow the cluster IPs at the
// addresses of keys (and, after a kernel read, every address).
func (w *Writer) syncAddrs(keys []dataplane.FrontendKey) error {
	todo := map[netip.Addr]bool{}
	for _, k := range keys {
		todo[k.Addr] = true
	}
	if w.allAddrs {
		for a := range w.addrs {
			todo[a.Addr] = true
		}
		w.allAddrs = false
	}
	var errs []error
	for a := range todo {
		for _, scope := range scopes {
			errs = append(errs, w.syncAddr(a, scope))
		}
	}
	return errors.Join(errs...)
}

func (w *Writer) syncAddr(a netip.Addr, scope uint8) error {
	sk := scoped{dataplane.FrontendKey{Addr: a}, scope}
	want := w.cip[a] > 0
	if want == w.addrs[sk] {
		return nil
	}
	k := sockSvcKey{Addr: addr16(a), Scope: scope}
	var err error
	if want {
		err = w.services.Put(k, sockSvcVal{Flags: svcFlagReject})
	} else {
		err = w.services.Delete(k)
	}
	if err != nil {
		return fmt.Errorf("cluster IP %s: %w", a, err)
	}
	if want {
		w.addrs[sk] = true
	} else {
		delete(w.addrs, sk)
	}
	return nil
}

func (w *Writer) countClusterIP(k dataplane.FrontendKey, cur *programmed, is bool) {
	if cur.clusterIP == is {
		return
	}
	cur.clusterIP = is
	if is {
		w.cip[k.Addr]++
	} else if w.cip[k.Addr]--; w.cip[k.Addr] <= 0 {
		delete(w.cip, k.Addr)
	}
}

// put programs both routes of one frontend.
func (w *Writer) put(f *dataplane.FrontendState) error {
	for _, scope := range scopes {
		if err := w.putRoute(f, scope); err != nil {
			return fmt.Errorf("%s (%s): %w", f.FrontendKey, f.Service, err)
		}
	}
	return nil
}

// putRoute programs one scope's entries: backends, slots, source ranges, the
// service entry, then stale slots.
func (w *Writer) putRoute(f *dataplane.FrontendState, scope uint8) error {
	r := route(f, scope)
	if len(r.Backends) > math.MaxUint16 {
		return fmt.Errorf("%d backends, at most %d: %w", len(r.Backends), math.MaxUint16, errTooManyBackends)
	}
	proto, err := protoNumber(f.Protocol)
	if err != nil {
		return err
	}
	ids := make([]uint32, len(r.Backends))
	for i, b := range r.Backends {
		if ids[i], err = w.backendID(b, proto); err != nil {
			return err
		}
	}
	sk := scoped{f.FrontendKey, scope}
	cur := w.frontends[sk]
	if cur == nil {
		cur = &programmed{}
		w.frontends[sk] = cur
	}
	for i, id := range ids {
		if i < len(cur.slots) && cur.slots[i] == id {
			continue
		}
		if err := w.services.Put(slotKey(sk, proto, i+1), sockSvcVal{BackendId: id}); err != nil {
			return err
		}
		w.setSlot(cur, i, id)
	}
	head := sockSvcVal{SvcId: w.svcID(f.Service, cur.head.SvcId), Count: uint16(len(ids)),
		Flags: flags(r), AffinityTimeout: uint32(f.Affinity.Seconds())}
	var ranges []rangeKey
	if scope == scopeOutside && r.Verdict == dataplane.Forward && len(f.SourceRanges) > 0 {
		head.Flags |= svcFlagRanges
		if ranges, err = w.putRanges(head.SvcId, f.SourceRanges); err != nil {
			return err
		}
	}
	if head != cur.head {
		if err := w.services.Put(slotKey(sk, proto, 0), head); err != nil {
			return err
		}
		cur.head = head
	}
	w.setRanges(cur, ranges)
	if scope == scopeSocket {
		w.countClusterIP(f.FrontendKey, cur, f.Type == dataplane.ClusterIP)
	}
	return w.trimSlots(sk, proto, cur, len(ids))
}

// remove deletes a frontend's entries in every scope.
func (w *Writer) remove(k dataplane.FrontendKey) error {
	for _, scope := range scopes {
		if err := w.removeScope(scoped{k, scope}); err != nil {
			return err
		}
	}
	return nil
}

// removeScope deletes one scope's entries: its service entry first, so lookups
// miss, then its slots.
func (w *Writer) removeScope(k scoped) error {
	cur := w.frontends[k]
	if cur == nil {
		return nil
	}
	proto, err := protoNumber(k.Protocol)
	if err != nil {
		return err
	}
	if err := w.services.Delete(slotKey(k, proto, 0)); err != nil {
		return fmt.Errorf("%s: %w", k.FrontendKey, err)
	}
	cur.head = sockSvcVal{}
	w.setRanges(cur, nil)
	if k.scope == scopeSocket {
		w.countClusterIP(k.FrontendKey, cur, false)
	}
	if err := w.trimSlots(k, proto, cur, 0); err != nil {
		return err
	}
	delete(w.frontends, k)
	return nil
}

// trimSlots deletes the slots past n, last first.
func (w *Writer) trimSlots(k scoped, proto uint8, cur *programmed, n int) error {
	for len(cur.slots) > n {
		i := len(cur.slots) - 1
		if err := w.services.Delete(slotKey(k, proto, i+1)); err != nil {
			return fmt.Errorf("%s: %w", k.FrontendKey, err)
		}
		w.release(cur.slots[i])
		cur.slots = cur.slots[:i]
		w.slotCount--
	}
	return nil
}

func (w *Writer) setSlot(cur *programmed, i int, id uint32) {
	if i < len(cur.slots) {
		w.release(cur.slots[i])
		cur.slots[i] = id
	} else {
		cur.slots = append(cur.slots, id)
		w.slotCount++
	}
	w.refs[id]++
}

// backendID returns the stable id of a backend, writing it to the kernel first
// when it is new.
func (w *Writer) backendID(e dataplane.Endpoint, proto uint8) (uint32, error) {
	b := sockBackend{Addr: addr16(e.Addr), Port: htons(e.Port), Proto: proto}
	if id, ok := w.ids[b]; ok {
		return id, nil
	}
	id := w.nextID
	if err := w.backends.Put(id, b); err != nil {
		return 0, fmt.Errorf("backend %s: %w", e.AddrPort(), err)
	}
	w.nextID++
	w.ids[b], w.byID[id] = id, b
	w.unused[id] = true // until a slot points at it
	return id, nil
}

func (w *Writer) release(id uint32) {
	if id == 0 {
		return // a slot read back empty from the kernel
	}
	w.refs[id]--
	w.unused[id] = true
}

// releaseUnused deletes the backends no slot points at any more.
func (w *Writer) releaseUnused() error {
	var errs []error
	// A Go map never shrinks: one left nearly empty after a full sync would make
	// every later sync scan all its buckets.
	if len(w.unused) > 4096 {
		defer func() { // maps.Clone would copy the buckets too
			small := make(map[uint32]bool, len(w.unused))
			for id := range w.unused {
				small[id] = true
			}
			w.unused = small
		}()
	}
	for id := range w.unused {
		if w.refs[id] > 0 {
			delete(w.unused, id)
			continue
		}
		if err := w.backends.Delete(id); err != nil {
			errs = append(errs, err)
			continue
		}
		b := w.byID[id]
		if w.ids[b] == id {
			delete(w.ids, b)
		}
		if b.Proto == 17 {
			w.removedUDP = append(w.removedUDP, netip.AddrPortFrom(netip.AddrFrom16(b.Addr).Unmap(), ntohs(b.Port)))
		}
		delete(w.byID, id)
		delete(w.refs, id)
		delete(w.unused, id)
	}
	return errors.Join(errs...)
}

// svcID is the service port's stable id, adopting the one the kernel holds.
func (w *Writer) svcID(sp dataplane.ServicePort, inKernel uint32) uint32 {
	if id, ok := w.svcIDs[sp]; ok {
		return id
	}
	id := inKernel
	if id == 0 {
		id = w.nextSvcID
	}
	w.nextSvcID = max(w.nextSvcID, id+1)
	w.svcIDs[sp] = id
	return id
}

// readKernel rebuilds the cache from the maps: after a restart the pinned maps
// are the truth, and an entry changed behind the writer's back shows up as a
// difference the sync then repairs.
func (w *Writer) readKernel() error {
	bes, err := w.backends.All()
	if err != nil {
		return err
	}
	svcs, err := w.services.All()
	if err != nil {
		return err
	}
	w.ids, w.byID, w.refs = map[sockBackend]uint32{}, map[uint32]sockBackend{}, map[uint32]int{}
	w.frontends, w.unused = map[scoped]*programmed{}, map[uint32]bool{}
	w.cip, w.addrs, w.allAddrs = map[netip.Addr]int{}, map[scoped]bool{}, true
	if err := w.readRanges(); err != nil {
		return err
	}
	w.slotCount = 0
	w.nextID = 1
	for _, id := range slices.Sorted(maps.Keys(bes)) {
		w.byID[id] = bes[id]
		w.unused[id] = true // whatever no slot points at after this sync goes
		if _, dup := w.ids[bes[id]]; !dup {
			w.ids[bes[id]] = id // a duplicate's slots move to the first id
		}
		w.nextID = max(w.nextID, id+1)
	}
	for k, v := range svcs {
		if k.Scope != scopeSocket && k.Scope != scopeOutside {
			continue
		}
		if k.Port == 0 && k.Proto == 0 {
			w.addrs[scoped{dataplane.FrontendKey{Addr: netip.AddrFrom16(k.Addr).Unmap()}, k.Scope}] = true
			continue
		}
		fk, ok := frontendKey(k)
		if !ok {
			continue
		}
		sk := scoped{fk, k.Scope}
		cur := w.frontends[sk]
		if cur == nil {
			cur = &programmed{}
			w.frontends[sk] = cur
		}
		if k.Slot == 0 {
			cur.head = v
			w.nextSvcID = max(w.nextSvcID, v.SvcId+1)
			continue
		}
		for len(cur.slots) < int(k.Slot) {
			cur.slots = append(cur.slots, 0) // a missing slot: rewritten by the sync
			w.slotCount++
		}
		if _, ok := bes[v.BackendId]; ok {
			cur.slots[k.Slot-1] = v.BackendId // else left 0: its backend vanished, rewrite it
			w.refs[v.BackendId]++
		}
	}
	return nil
}

func slotKey(k scoped, proto uint8, slot int) sockSvcKey {
	return sockSvcKey{Addr: addr16(k.Addr), Port: htons(k.Port), Proto: proto, Scope: k.scope, Slot: uint16(slot)}
}

func frontendKey(k sockSvcKey) (dataplane.FrontendKey, bool) {
	proto, ok := protoName(k.Proto)
	return dataplane.FrontendKey{Addr: netip.AddrFrom16(k.Addr).Unmap(), Port: ntohs(k.Port), Protocol: proto}, ok
}

func flags(r *dataplane.Route) uint8 {
	switch r.Verdict {
	case dataplane.Reject:
		return svcFlagReject
	case dataplane.Drop:
		return svcFlagDrop
	}
	if r.Masquerade {
		return svcFlagMasq
	}
	return 0
}

// addr16 is an address as the maps hold it: IPv4 as IPv4-mapped IPv6.
func addr16(a netip.Addr) [16]uint8 { return a.As16() }

// htons: the maps hold ports in network order and the objects are bpfel, for
// little-endian hosts.
func htons(p uint16) uint16 { return p<<8 | p>>8 }
func ntohs(p uint16) uint16 { return htons(p) }

func protoNumber(p dataplane.Protocol) (uint8, error) {
	switch p {
	case dataplane.TCP:
		return 6, nil
	case dataplane.UDP:
		return 17, nil
	case dataplane.SCTP:
		return 132, nil
	}
	return 0, fmt.Errorf("unknown protocol %q", p)
}

func protoName(n uint8) (dataplane.Protocol, bool) {
	switch n {
	case 6:
		return dataplane.TCP, true
	case 17:
		return dataplane.UDP, true
	case 132:
		return dataplane.SCTP, true
	}
	return "", false
}

func compareKeys(a, b dataplane.FrontendKey) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Port, b.Port); c != 0 {
		return c
	}
	return cmp.Compare(a.Protocol, b.Protocol)
}
