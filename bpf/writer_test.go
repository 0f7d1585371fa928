package bpf

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/dataplane"
)

type fakes struct {
	svc *FakeMap[sockSvcKey, sockSvcVal]
	be  *FakeMap[uint32, sockBackend]
	rng *FakeMap[tcRangeKey, uint8]
	ops []string // every write, in order
}

func newFakes(maxBackends int) *fakes {
	f := &fakes{svc: NewFakeMap[sockSvcKey, sockSvcVal](1 << 20), be: NewFakeMap[uint32, sockBackend](maxBackends),
		rng: NewFakeMap[tcRangeKey, uint8](1 << 10)}
	f.svc.Fail = func(op string, k sockSvcKey) error {
		op = fmt.Sprintf("svc %s slot %d", op, k.Slot)
		if k.Scope == scopeOutside {
			op += " outside"
		}
		f.ops = append(f.ops, op)
		return nil
	}
	f.rng.Fail = func(op string, _ tcRangeKey) error {
		f.ops = append(f.ops, "range "+op)
		return nil
	}
	f.be.Fail = func(op string, id uint32) error {
		f.ops = append(f.ops, "backend "+op)
		return nil
	}
	return f
}

func (f *fakes) writer() *Writer { return NewWriter(f.svc, f.be, f.rng) }

// view renders what the maps make of every frontend's socket entries, with
// backend ids resolved, so two writers' results compare regardless of the ids
// they chose.
func (f *fakes) view(t *testing.T) []string {
	t.Helper()
	return f.viewScope(t, scopeSocket)
}

// viewScope is view for one scope's entries.
func (f *fakes) viewScope(t *testing.T, scope uint8) []string {
	t.Helper()
	svcs, _ := f.svc.All()
	bes, _ := f.be.All()
	var out []string
	for k, head := range svcs {
		if k.Slot != 0 || k.Scope != scope {
			continue
		}
		if k.Port == 0 && k.Proto == 0 {
			out = append(out, fmt.Sprintf("%s any port: flags=%d", netip.AddrFrom16(k.Addr).Unmap(), head.Flags))
			continue
		}
		fk, _ := frontendKey(k)
		line := fmt.Sprintf("%s count=%d flags=%d affinity=%d:", fk, head.Count, head.Flags, head.AffinityTimeout)
		for s := 1; s <= int(head.Count); s++ {
			k.Slot = uint16(s)
			slot, ok := svcs[k]
			b, okb := bes[slot.BackendId]
			if !ok || !okb {
				t.Errorf("%s: slot %d dangles", fk, s)
				continue
			}
			line += " " + netip.AddrPortFrom(netip.AddrFrom16(b.Addr).Unmap(), ntohs(b.Port)).String()
		}
		out = append(out, line)
	}
	slices.Sort(out)
	return out
}

func ep(s string) dataplane.Endpoint {
	ap := netip.MustParseAddrPort(s)
	return dataplane.Endpoint{Addr: ap.Addr(), Port: ap.Port(), Ready: true, Serving: true}
}

// stateOf builds a desired state: each frontend "ip:port/PROTO" with its backends
// (or REJECT / DROP).
func stateOf(frontends map[string][]string) *dataplane.State {
	st := dataplane.NewState()
	for fe, backends := range frontends {
		addr, proto, _ := strings.Cut(fe, "/")
		ap := netip.MustParseAddrPort(addr)
		f := &dataplane.FrontendState{
			Frontend: dataplane.Frontend{FrontendKey: dataplane.FrontendKey{Addr: ap.Addr(), Port: ap.Port(), Protocol: dataplane.Protocol(proto)}},
			Service:  dataplane.ServicePort{ServiceName: dataplane.ServiceName{Namespace: "ns", Name: fe}, Protocol: dataplane.Protocol(proto)},
		}
		switch {
		case len(backends) == 1 && backends[0] == "REJECT":
			f.Pod.Verdict = dataplane.Reject
		case len(backends) == 1 && backends[0] == "DROP":
			f.Pod.Verdict = dataplane.Drop
		default:
			for _, b := range backends {
				f.Pod.Backends = append(f.Pod.Backends, ep(b))
			}
		}
		f.Outside = f.Pod // what the model does for a ClusterIP without a cluster CIDR
		st.Frontends[f.FrontendKey] = f
	}
	return st
}

func changed(keys ...string) *dataplane.ChangeSet {
	cs := &dataplane.ChangeSet{Frontends: map[dataplane.FrontendKey]struct{}{}}
	for _, k := range keys {
		addr, proto, _ := strings.Cut(k, "/")
		ap := netip.MustParseAddrPort(addr)
		cs.Frontends[dataplane.FrontendKey{Addr: ap.Addr(), Port: ap.Port(), Protocol: dataplane.Protocol(proto)}] = struct{}{}
	}
	return cs
}

func TestWriterProgramsState(t *testing.T) {
	f := newFakes(100)
	w := f.writer()
	st := stateOf(map[string][]string{
		"172.30.0.10:80/TCP":   {"10.0.1.1:8080", "10.0.1.2:8080"},
		"172.30.0.10:53/UDP":   {"10.0.1.1:5353"},
		"172.30.0.11:80/TCP":   {"REJECT"},
		"[fd00:30::10]:80/TCP": {"[fd00:10::1]:8080"},
	})
	st.Frontends[dataplane.FrontendKey{Addr: netip.MustParseAddr("172.30.0.10"), Port: 80, Protocol: "TCP"}].Affinity = time.Minute
	if err := w.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"172.30.0.10 any port: flags=1",
		"172.30.0.10:53/UDP count=1 flags=0 affinity=0: 10.0.1.1:5353",
		"172.30.0.10:80/TCP count=2 flags=0 affinity=60: 10.0.1.1:8080 10.0.1.2:8080",
		"172.30.0.11 any port: flags=1",
		"172.30.0.11:80/TCP count=0 flags=1 affinity=0:",
		"[fd00:30::10]:80/TCP count=1 flags=0 affinity=0: [fd00:10::1]:8080",
		"fd00:30::10 any port: flags=1",
	}
	if got := f.view(t); !slices.Equal(got, want) {
		t.Errorf("maps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := f.viewScope(t, scopeOutside); !slices.Equal(got, want) {
		t.Errorf("outside entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if f.be.Len() != 4 {
		t.Errorf("%d backends, want 4 (one per address, port and protocol)", f.be.Len())
	}
	if svcs, bes := w.Entries(); svcs != int64(f.svc.Len()) || bes != int64(f.be.Len()) {
		t.Errorf("Entries() = %d, %d; the maps hold %d, %d", svcs, bes, f.svc.Len(), f.be.Len())
	}
}

func TestWriterMakeBeforeBreak(t *testing.T) {
	f := newFakes(100)
	w := f.writer()
	fe := "172.30.0.10:80/TCP"
	if err := w.Sync(context.Background(), stateOf(map[string][]string{fe: {"10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"}}), nil); err != nil {
		t.Fatal(err)
	}
	before, _ := f.be.All()
	f.ops = nil
	// One backend replaced, one removed: new backend, its slot, the count, then the stale slot and backends.
	if err := w.Sync(context.Background(), stateOf(map[string][]string{fe: {"10.0.1.1:8080", "10.0.1.9:8080"}}), changed(fe)); err != nil {
		t.Fatal(err)
	}
	want := []string{"backend put", "svc put slot 2", "svc put slot 0", "svc delete slot 3",
		"svc put slot 2 outside", "svc put slot 0 outside", "svc delete slot 3 outside", "backend delete", "backend delete"}
	if !slices.Equal(f.ops, want) {
		t.Errorf("writes %v, want %v", f.ops, want)
	}
	after, _ := f.be.All()
	for id, b := range after {
		if old, ok := before[id]; ok && old != b {
			t.Errorf("backend id %d was reused for another backend", id)
		}
	}
}

func TestWriterRecoversAfterRestart(t *testing.T) {
	f := newFakes(100)
	st := stateOf(map[string][]string{
		"172.30.0.10:80/TCP": {"10.0.1.1:8080", "10.0.1.2:8080"},
		"172.30.0.12:80/TCP": {"10.0.1.2:8080"},
	})
	if err := f.writer().Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	ids, _ := f.be.All()
	f.ops = nil
	// A new process takes over the pinned maps: nothing to write.
	w2 := f.writer()
	if err := w2.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	if len(f.ops) != 0 {
		t.Errorf("a restart with the same state wrote %v", f.ops)
	}
	if again, _ := f.be.All(); len(again) != len(ids) {
		t.Errorf("backend ids changed: %v -> %v", ids, again)
	}
	// And it keeps allocating after the recovered ids.
	st2 := stateOf(map[string][]string{"172.30.0.10:80/TCP": {"10.0.1.1:8080", "10.0.1.7:8080"}, "172.30.0.12:80/TCP": {"10.0.1.2:8080"}})
	if err := w2.Sync(context.Background(), st2, changed("172.30.0.10:80/TCP")); err != nil {
		t.Fatal(err)
	}
	if got := f.view(t); got[1] != "172.30.0.10:80/TCP count=2 flags=0 affinity=0: 10.0.1.1:8080 10.0.1.7:8080" {
		t.Errorf("after restart: %v", got)
	}
}

func TestWriterRepairsDrift(t *testing.T) {
	f := newFakes(100)
	w := f.writer()
	st := stateOf(map[string][]string{"172.30.0.10:80/TCP": {"10.0.1.1:8080", "10.0.1.2:8080"}, "172.30.0.11:80/TCP": {"10.0.1.3:8080"}})
	if err := w.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	want := f.view(t)
	svcs, _ := f.svc.All()
	for k := range svcs {
		if k.Slot == 2 || (k.Slot == 0 && ntohs(k.Port) == 80 && k.Addr[15] == 11) {
			if err := f.svc.Delete(k); err != nil { // behind the writer's back
				t.Fatal(err)
			}
		}
	}
	bes, _ := f.be.All()
	for id, b := range bes {
		if b.Addr[15] == 1 {
			if err := f.be.Delete(id); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	if got := f.view(t); !slices.Equal(got, want) {
		t.Errorf("after repair:\n%v\nwant\n%v", got, want)
	}
}

func TestWriterFullMapDisturbsNothingElse(t *testing.T) {
	f := newFakes(3)
	w := f.writer()
	st := stateOf(map[string][]string{"172.30.0.10:80/TCP": {"10.0.1.1:8080", "10.0.1.2:8080"}})
	if err := w.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	st = stateOf(map[string][]string{
		"172.30.0.10:80/TCP": {"10.0.1.1:8080", "10.0.1.2:8080"},
		"172.30.0.20:80/TCP": {"10.0.2.1:8080", "10.0.2.2:8080", "10.0.2.3:8080"},
		"172.30.0.21:80/TCP": {"REJECT"},
	})
	err := w.Sync(context.Background(), st, changed("172.30.0.20:80/TCP", "172.30.0.21:80/TCP"))
	if err == nil || !strings.Contains(err.Error(), "172.30.0.20:80/TCP") || !strings.Contains(err.Error(), "full") {
		t.Fatalf("want an error naming the frontend and the full map, got %v", err)
	}
	// Refused for its own input: a partial success the runner reports, not a failed sync.
	if fe, ok := err.(dataplane.FrontendErrors); !ok || len(fe) != 1 {
		t.Errorf("want FrontendErrors with one frontend, got %T %v", err, err)
	}
	got := f.view(t)
	want := []string{
		"172.30.0.10 any port: flags=1",
		"172.30.0.10:80/TCP count=2 flags=0 affinity=0: 10.0.1.1:8080 10.0.1.2:8080",
		"172.30.0.21 any port: flags=1",
		"172.30.0.21:80/TCP count=0 flags=1 affinity=0:",
	}
	if !slices.Equal(got, want) {
		t.Errorf("maps:\n%v\nwant\n%v", got, want)
	}
	if f.be.Len() != 2 {
		t.Errorf("%d backends: the half-written service must not leave any behind", f.be.Len())
	}
}

// Writes fail at random while the state changes; once they stop failing, one full
// sync leaves exactly what a fresh writer would write: nothing leaked, nothing lost.
func TestWriterRandomFailures(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	f := newFakes(1000)
	failing := true
	inject := func(string) error {
		if failing && rng.Intn(5) == 0 {
			return errors.New("injected")
		}
		return nil
	}
	f.svc.Fail = func(op string, _ sockSvcKey) error { return inject(op) }
	f.be.Fail = func(op string, _ uint32) error { return inject(op) }
	w := f.writer()
	var st *dataplane.State
	for round := 0; round < 50; round++ {
		fes := map[string][]string{}
		for s := 0; s < 6; s++ {
			if rng.Intn(4) == 0 {
				continue
			}
			var bs []string
			for b := 0; b < rng.Intn(5); b++ {
				bs = append(bs, fmt.Sprintf("10.0.%d.%d:8080", s, rng.Intn(6)+1))
			}
			slices.Sort(bs)
			bs = slices.Compact(bs)
			if len(bs) == 0 {
				bs = []string{"REJECT"}
			}
			fes[fmt.Sprintf("172.30.0.%d:80/TCP", s+1)] = bs
		}
		next := stateOf(fes)
		var cs *dataplane.ChangeSet
		if st != nil && round%7 != 0 {
			cs = dataplane.Diff(st, next)
		}
		_ = w.Sync(context.Background(), next, cs) // failures are expected here; the next full sync repairs
		st = next
	}
	failing = false
	if err := w.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	clean := newFakes(1000)
	if err := clean.writer().Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := f.view(t), clean.view(t); !slices.Equal(got, want) {
		t.Errorf("after failures:\n%v\nwant\n%v", got, want)
	}
	if svcs, bes := w.Entries(); svcs != int64(f.svc.Len()) || bes != int64(f.be.Len()) {
		t.Errorf("Entries() = %d, %d; the maps hold %d, %d", svcs, bes, f.svc.Len(), f.be.Len())
	}
	if f.be.Len() != clean.be.Len() || f.svc.Len() != clean.svc.Len() {
		t.Errorf("leaked entries: %d backends, %d service entries; want %d, %d", f.be.Len(), f.svc.Len(), clean.be.Len(), clean.svc.Len())
	}
}

// A cluster IP refuses the ports it does not serve through an address-only entry,
// which lives as long as the address has a cluster IP frontend; other frontend
// types (a node address, say) get none.
func TestWriterAddressEntries(t *testing.T) {
	f := newFakes(100)
	w := f.writer()
	st := stateOf(map[string][]string{"172.30.0.10:80/TCP": {"10.0.1.1:8080"}, "172.30.0.10:53/UDP": {"10.0.1.1:5353"}, "192.168.0.2:30080/TCP": {"10.0.1.1:8080"}})
	np := st.Frontends[dataplane.FrontendKey{Addr: netip.MustParseAddr("192.168.0.2"), Port: 30080, Protocol: "TCP"}]
	np.Type = dataplane.NodePort
	if err := w.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	has := func(want string) bool { return slices.Contains(f.view(t), want) }
	if !has("172.30.0.10 any port: flags=1") || has("192.168.0.2 any port: flags=1") {
		t.Errorf("address entries: %v", f.view(t))
	}
	delete(st.Frontends, dataplane.FrontendKey{Addr: netip.MustParseAddr("172.30.0.10"), Port: 80, Protocol: "TCP"})
	if err := w.Sync(context.Background(), st, changed("172.30.0.10:80/TCP")); err != nil {
		t.Fatal(err)
	}
	if !has("172.30.0.10 any port: flags=1") {
		t.Error("the address still has a cluster IP frontend")
	}
	delete(st.Frontends, dataplane.FrontendKey{Addr: netip.MustParseAddr("172.30.0.10"), Port: 53, Protocol: "UDP"})
	if err := w.Sync(context.Background(), st, changed("172.30.0.10:53/UDP")); err != nil {
		t.Fatal(err)
	}
	if has("172.30.0.10 any port: flags=1") {
		t.Errorf("the last cluster IP frontend went, the address entry stayed: %v", f.view(t))
	}
	// A restarted writer finds the entries and keeps them in step.
	st = stateOf(map[string][]string{"172.30.0.20:80/TCP": {"10.0.1.1:8080"}})
	if err := w.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.writer().Sync(context.Background(), stateOf(map[string][]string{}), nil); err != nil {
		t.Fatal(err)
	}
	if got := f.view(t); len(got) != 0 || f.be.Len() != 0 {
		t.Errorf("an empty state leaves %v and %d backends", got, f.be.Len())
	}
}

// BenchmarkWriterOneChange10k: one endpoint of one service changes among 10,000
// services x 10 endpoints; the cost must not grow with the rest.
func BenchmarkWriterOneChange10k(b *testing.B) {
	fes := map[string][]string{}
	for i := 0; i < 10000; i++ {
		var bs []string
		for j := 1; j <= 10; j++ {
			bs = append(bs, fmt.Sprintf("10.%d.%d.%d:8080", j, i/256, i%256))
		}
		fes[fmt.Sprintf("172.30.%d.%d:80/TCP", i/256, i%256)] = bs
	}
	st := stateOf(fes)
	f := &fakes{svc: NewFakeMap[sockSvcKey, sockSvcVal](1 << 20), be: NewFakeMap[uint32, sockBackend](1 << 20)}
	w := f.writer()
	if err := w.Sync(context.Background(), st, nil); err != nil {
		b.Fatal(err)
	}
	key := dataplane.FrontendKey{Addr: netip.MustParseAddr("172.30.0.42"), Port: 80, Protocol: "TCP"}
	full := st.Frontends[key].Pod.Backends
	cs := changed("172.30.0.42:80/TCP")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st.Frontends[key].Pod.Backends = full[:9+i%2]
		if err := w.Sync(context.Background(), st, cs); err != nil {
			b.Fatal(err)
		}
	}
}

// The writer names the UDP backends it deleted, whose connected sockets the
// backend then destroys.
func TestWriterReportsRemovedUDPBackends(t *testing.T) {
	f := newFakes(100)
	w := f.writer()
	st := stateOf(map[string][]string{"172.30.0.10:53/UDP": {"10.0.1.1:5353", "10.0.1.2:5353"}, "172.30.0.10:80/TCP": {"10.0.1.1:8080"}})
	if err := w.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	st = stateOf(map[string][]string{"172.30.0.10:53/UDP": {"10.0.1.1:5353"}})
	if err := w.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	if got := w.TakeRemovedUDP(); len(got) != 1 || got[0] != netip.MustParseAddrPort("10.0.1.2:5353") {
		t.Errorf("removed UDP backends %v, want 10.0.1.2:5353 only", got)
	}
	if got := w.TakeRemovedUDP(); len(got) != 0 {
		t.Errorf("taken twice: %v", got)
	}
}

// The Outside route goes to the outside scope with its own backends, the
// masquerade flag and the source ranges, written before the entry that turns
// them on and deleted after the last user is gone, also across a restart.
func TestWriterOutsideRouteAndSourceRanges(t *testing.T) {
	f := newFakes(100)
	w := f.writer()
	lb := "192.0.2.50:80/TCP"
	st := stateOf(map[string][]string{lb: {"10.0.1.1:8080", "10.0.2.1:8080"}})
	fe := st.Frontends[dataplane.FrontendKey{Addr: netip.MustParseAddr("192.0.2.50"), Port: 80, Protocol: "TCP"}]
	fe.Type = dataplane.LoadBalancerIP
	fe.Outside = dataplane.Route{Backends: fe.Pod.Backends[:1], Masquerade: true}
	fe.SourceRanges = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("198.51.100.7/32")}
	f.ops = nil
	if err := w.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := f.viewScope(t, scopeOutside), []string{"192.0.2.50:80/TCP count=1 flags=12 affinity=0: 10.0.1.1:8080"}; !slices.Equal(got, want) {
		t.Errorf("outside entries %v, want %v", got, want)
	}
	if got, want := f.view(t), []string{"192.0.2.50:80/TCP count=2 flags=0 affinity=0: 10.0.1.1:8080 10.0.2.1:8080"}; !slices.Equal(got, want) {
		t.Errorf("socket entries %v, want %v", got, want)
	}
	if i, j := slices.Index(f.ops, "range put"), slices.Index(f.ops, "svc put slot 0 outside"); i < 0 || i > j {
		t.Errorf("the ranges must be written before the entry that uses them: %v", f.ops)
	}
	ranges := func() []string {
		all, _ := f.rng.All()
		var out []string
		for k := range all {
			r := fromLPMKey(k)
			out = append(out, r.prefix.String())
			if lpmKey(r) != k {
				t.Errorf("LPM key %+v does not round-trip", k)
			}
		}
		slices.Sort(out)
		return out
	}
	if got := ranges(); !slices.Equal(got, []string{"198.51.100.7/32", "203.0.113.0/24"}) {
		t.Errorf("ranges %v", got)
	}

	fe.SourceRanges = fe.SourceRanges[:1]
	if err := w.Sync(context.Background(), st, changed(lb)); err != nil {
		t.Fatal(err)
	}
	if got := ranges(); !slices.Equal(got, []string{"203.0.113.0/24"}) {
		t.Errorf("after dropping one range: %v", got)
	}
	// A restarted writer finds a range nobody claims (left by a crash) and deletes it.
	if err := f.rng.Put(lpmKey(rangeKey{99, netip.MustParsePrefix("10.9.0.0/16")}), 1); err != nil {
		t.Fatal(err)
	}
	if err := f.writer().Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	if got := ranges(); !slices.Equal(got, []string{"203.0.113.0/24"}) {
		t.Errorf("after a restart: %v", got)
	}
	delete(st.Frontends, fe.FrontendKey)
	w2 := f.writer()
	if err := w2.Sync(context.Background(), st, nil); err != nil {
		t.Fatal(err)
	}
	if got := ranges(); len(got) != 0 || f.svc.Len() != 0 || f.be.Len() != 0 {
		t.Errorf("after removal: ranges %v, %d service entries, %d backends", got, f.svc.Len(), f.be.Len())
	}
}

// A sync whose context ends stops between two frontends with the context's
// error: those it reached are complete in both scopes, with their address
// entries; the others are untouched; the next sync writes them.
func TestWriterStopsBetweenFrontends(t *testing.T) {
	f := newFakes(100)
	w := f.writer()
	fes := map[string][]string{}
	for i := 1; i <= 10; i++ {
		fes[fmt.Sprintf("172.30.0.%d:80/TCP", i)] = []string{fmt.Sprintf("10.0.1.%d:8080", i), fmt.Sprintf("10.0.2.%d:8080", i)}
	}
	st := stateOf(fes)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	record, heads := f.svc.Fail, 0
	f.svc.Fail = func(op string, k sockSvcKey) error {
		if op == "put" && k.Slot == 0 && k.Scope == scopeSocket && k.Port != 0 {
			if heads++; heads == 3 {
				cancel() // a shutdown while the third frontend is being written
			}
		}
		return record(op, k)
	}
	if err := w.Sync(ctx, st, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync = %v, want an error wrapping context.Canceled", err)
	}
	want := []string{
		"172.30.0.1 any port: flags=1",
		"172.30.0.1:80/TCP count=2 flags=0 affinity=0: 10.0.1.1:8080 10.0.2.1:8080",
		"172.30.0.2 any port: flags=1",
		"172.30.0.2:80/TCP count=2 flags=0 affinity=0: 10.0.1.2:8080 10.0.2.2:8080",
		"172.30.0.3 any port: flags=1",
		"172.30.0.3:80/TCP count=2 flags=0 affinity=0: 10.0.1.3:8080 10.0.2.3:8080",
	}
	for _, scope := range []uint8{scopeSocket, scopeOutside} {
		if got := f.viewScope(t, scope); !slices.Equal(got, want) {
			t.Errorf("scope %d after a stop at the third frontend:\n%s\nwant:\n%s", scope, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if err := w.Sync(t.Context(), st, nil); err != nil {
		t.Fatal(err)
	}
	fresh := newFakes(100)
	if err := fresh.writer().Sync(t.Context(), st, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := f.view(t), fresh.view(t); !slices.Equal(got, want) {
		t.Errorf("after the next sync:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
