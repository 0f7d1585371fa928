package bpf

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/switchyard/switchyard/dataplane"
)

// Service entry flags (svc_val.flags), as in sock.c.
const (
	svcFlagReject = 1
	svcFlagDrop   = 2
)

// scopeSocket is svc_key.scope for traffic that starts on the node.
const scopeSocket = 0

// Writer programs the socket-LB maps from the desired state. It keeps a cache of
// what the kernel holds, changed only after a write succeeded, and writes every
// frontend make-before-break (Cilium's order): backends, then slots, then the
// service entry with its backend count, then the stale slots are deleted.
type Writer struct {
	services Map[sockSvcKey, sockSvcVal]
	backends Map[uint32, sockBackend]

	frontends map[dataplane.FrontendKey]*programmed
	ids       map[sockBackend]uint32 // backend -> stable id
	refs      map[uint32]int         // backend id -> slots using it
	stale     map[uint32]bool        // duplicate ids found in the kernel
	svcIDs    map[dataplane.ServicePort]uint32
	// cip counts the cluster IP frontends per address; addrs are the address-only
	// entries in the kernel, which refuse the ports a cluster IP does not serve.
	cip       map[netip.Addr]int
	addrs     map[netip.Addr]bool
	nextID    uint32
	nextSvcID uint32
	slotCount int // slots in w.frontends, for the map pressure

	// Entries in the services and backends maps after the last Sync, for metrics
	// read from other goroutines.
	serviceEntries, backendEntries atomic.Int64
}

// programmed is one frontend as the kernel holds it.
type programmed struct {
	head      sockSvcVal
	slots     []uint32 // backend ids of slots 1..len
	clusterIP bool     // counted in Writer.cip
}

// NewWriter returns a writer over the services and backends maps.
func NewWriter(services Map[sockSvcKey, sockSvcVal], backends Map[uint32, sockBackend]) *Writer {
	return &Writer{
		services: services, backends: backends,
		frontends: map[dataplane.FrontendKey]*programmed{},
		ids:       map[sockBackend]uint32{}, refs: map[uint32]int{}, stale: map[uint32]bool{},
		svcIDs: map[dataplane.ServicePort]uint32{}, nextID: 1, nextSvcID: 1,
		cip: map[netip.Addr]int{}, addrs: map[netip.Addr]bool{},
	}
}

// Sync writes the changed frontends, or with changes nil, reads the kernel back
// and makes it match the whole state (restart recovery and drift repair). A
// frontend that cannot be written keeps what it had; the others go on, and the
// errors come back together.
func (w *Writer) Sync(st *dataplane.State, changes *dataplane.ChangeSet) error {
	var keys []dataplane.FrontendKey
	if changes == nil {
		if err := w.readKernel(); err != nil {
			return err
		}
		for k := range st.Frontends {
			keys = append(keys, k)
		}
		for k := range w.frontends {
			if st.Frontends[k] == nil {
				keys = append(keys, k)
			}
		}
	} else {
		for k := range changes.Frontends {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareKeys)
	var errs []error
	for _, k := range keys {
		var err error
		if f := st.Frontends[k]; f != nil {
			err = w.put(f)
		} else {
			err = w.remove(k)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, w.syncAddrs(keys), w.releaseUnused())
	w.serviceEntries.Store(int64(len(w.frontends) + w.slotCount + len(w.addrs)))
	w.backendEntries.Store(int64(len(w.ids) + len(w.stale)))
	return errors.Join(errs...)
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
	for a := range w.addrs {
		todo[a] = true
	}
	var errs []error
	for a := range todo {
		want := w.cip[a] > 0
		if want == w.addrs[a] {
			continue
		}
		k := sockSvcKey{Addr: addr16(a), Scope: scopeSocket}
		var err error
		if want {
			err = w.services.Put(k, sockSvcVal{Flags: svcFlagReject})
		} else {
			err = w.services.Delete(k)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster IP %s: %w", a, err))
			continue
		}
		if want {
			w.addrs[a] = true
		} else {
			delete(w.addrs, a)
		}
	}
	return errors.Join(errs...)
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

// put programs one frontend with the route of traffic that starts on the node.
func (w *Writer) put(f *dataplane.FrontendState) error {
	fail := func(err error) error { return fmt.Errorf("%s (%s): %w", f.FrontendKey, f.Service, err) }
	route := f.Pod
	if len(route.Backends) > math.MaxUint16 {
		return fail(fmt.Errorf("%d backends, at most %d per frontend", len(route.Backends), math.MaxUint16))
	}
	proto, err := protoNumber(f.Protocol)
	if err != nil {
		return fail(err)
	}
	ids := make([]uint32, len(route.Backends))
	for i, b := range route.Backends {
		if ids[i], err = w.backendID(b, proto); err != nil {
			return fail(err)
		}
	}
	cur := w.frontends[f.FrontendKey]
	if cur == nil {
		cur = &programmed{}
		w.frontends[f.FrontendKey] = cur
	}
	for i, id := range ids {
		if i < len(cur.slots) && cur.slots[i] == id {
			continue
		}
		if err := w.services.Put(slotKey(f.FrontendKey, proto, i+1), sockSvcVal{BackendId: id}); err != nil {
			return fail(err)
		}
		w.setSlot(cur, i, id)
	}
	head := sockSvcVal{SvcId: w.svcID(f.Service, cur.head.SvcId), Count: uint16(len(ids)),
		Flags: flags(route.Verdict), AffinityTimeout: uint32(f.Affinity.Seconds())}
	if head != cur.head {
		if err := w.services.Put(slotKey(f.FrontendKey, proto, 0), head); err != nil {
			return fail(err)
		}
		cur.head = head
	}
	w.countClusterIP(f.FrontendKey, cur, f.Type == dataplane.ClusterIP)
	return w.trimSlots(f.FrontendKey, proto, cur, len(ids))
}

// remove deletes a frontend: its entry first, so lookups miss, then its slots.
func (w *Writer) remove(k dataplane.FrontendKey) error {
	cur := w.frontends[k]
	if cur == nil {
		return nil
	}
	proto, err := protoNumber(k.Protocol)
	if err != nil {
		return err
	}
	if err := w.services.Delete(slotKey(k, proto, 0)); err != nil {
		return fmt.Errorf("%s: %w", k, err)
	}
	cur.head = sockSvcVal{}
	w.countClusterIP(k, cur, false)
	if err := w.trimSlots(k, proto, cur, 0); err != nil {
		return err
	}
	delete(w.frontends, k)
	return nil
}

// trimSlots deletes the slots past n, last first.
func (w *Writer) trimSlots(k dataplane.FrontendKey, proto uint8, cur *programmed, n int) error {
	for len(cur.slots) > n {
		i := len(cur.slots) - 1
		if err := w.services.Delete(slotKey(k, proto, i+1)); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		w.refs[cur.slots[i]]--
		cur.slots = cur.slots[:i]
		w.slotCount--
	}
	return nil
}

func (w *Writer) setSlot(cur *programmed, i int, id uint32) {
	if i < len(cur.slots) {
		w.refs[cur.slots[i]]--
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
	w.ids[b] = id
	return id, nil
}

// releaseUnused deletes backends no slot points at any more.
func (w *Writer) releaseUnused() error {
	var errs []error
	for id := range w.stale {
		if w.refs[id] > 0 {
			continue
		}
		if err := w.backends.Delete(id); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(w.stale, id)
		delete(w.refs, id)
	}
	for b, id := range w.ids {
		if w.refs[id] > 0 {
			continue
		}
		if err := w.backends.Delete(id); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(w.ids, b)
		delete(w.refs, id)
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
	w.ids, w.refs, w.frontends = map[sockBackend]uint32{}, map[uint32]int{}, map[dataplane.FrontendKey]*programmed{}
	w.cip, w.addrs = map[netip.Addr]int{}, map[netip.Addr]bool{}
	w.slotCount = 0
	w.nextID = 1
	w.stale = map[uint32]bool{}
	for _, id := range slices.Sorted(maps.Keys(bes)) {
		if _, dup := w.ids[bes[id]]; dup {
			w.stale[id] = true // slots move to the first id; then it goes
		} else {
			w.ids[bes[id]] = id
		}
		w.nextID = max(w.nextID, id+1)
	}
	for k, v := range svcs {
		if k.Scope != scopeSocket {
			continue
		}
		if k.Port == 0 && k.Proto == 0 {
			w.addrs[netip.AddrFrom16(k.Addr).Unmap()] = true
			continue
		}
		fk, ok := frontendKey(k)
		if !ok {
			continue
		}
		cur := w.frontends[fk]
		if cur == nil {
			cur = &programmed{}
			w.frontends[fk] = cur
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

func slotKey(k dataplane.FrontendKey, proto uint8, slot int) sockSvcKey {
	return sockSvcKey{Addr: addr16(k.Addr), Port: htons(k.Port), Proto: proto, Scope: scopeSocket, Slot: uint16(slot)}
}

func frontendKey(k sockSvcKey) (dataplane.FrontendKey, bool) {
	proto, ok := protoName(k.Proto)
	return dataplane.FrontendKey{Addr: netip.AddrFrom16(k.Addr).Unmap(), Port: ntohs(k.Port), Protocol: proto}, ok
}

func flags(v dataplane.Verdict) uint8 {
	switch v {
	case dataplane.Reject:
		return svcFlagReject
	case dataplane.Drop:
		return svcFlagDrop
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
