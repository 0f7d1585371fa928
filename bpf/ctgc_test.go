package bpf

import (
	"net/netip"
	"testing"
)

// A flow as the tc programs write it: forward entry (client -> frontend) and
// reply entry (backend -> masquerade address).
type gcFlow struct {
	fk, rk tcCtKey
	fv, rv tcCtVal
}

func newGCFlow(client, frontend, backend, masq string, expires uint64) gcFlow {
	c, fe, be, m := netip.MustParseAddrPort(client), netip.MustParseAddrPort(frontend), netip.MustParseAddrPort(backend), netip.MustParseAddrPort(masq)
	k := func(s, d netip.AddrPort) tcCtKey {
		return tcCtKey{Saddr: addr16(s.Addr()), Daddr: addr16(d.Addr()), Sport: htons(s.Port()), Dport: htons(d.Port()), Proto: protoTCP}
	}
	v := func(s, d netip.AddrPort) tcCtVal {
		return tcCtVal{Saddr: addr16(s.Addr()), Daddr: addr16(d.Addr()), Sport: htons(s.Port()), Dport: htons(d.Port())}
	}
	f := gcFlow{fk: k(c, fe), rk: k(be, m), fv: v(m, be), rv: v(fe, c)}
	f.fv.Expires = expires
	f.rv.IsReply = 1
	return f
}

func (f gcFlow) put(t *testing.T, m *FakeMap[tcCtKey, tcCtVal]) {
	t.Helper()
	if m.Put(f.fk, f.fv) != nil || m.Put(f.rk, f.rv) != nil {
		t.Fatal("fake map full")
	}
}

func has(m *FakeMap[tcCtKey, tcCtVal], k tcCtKey) bool {
	_, ok, _ := m.Get(k)
	return ok
}

func TestCTGCDeletesWhatIsOver(t *testing.T) {
	m := NewFakeMap[tcCtKey, tcCtVal](100)
	now := uint64(1000e9)
	g := newCTGC(m)
	g.now = func() uint64 { return now }

	live := newGCFlow("203.0.113.10:40000", "192.168.0.2:30080", "10.0.1.1:8080", "192.168.0.2:20000", now+10e9)
	over := newGCFlow("203.0.113.10:40001", "192.168.0.2:30080", "10.0.1.1:8080", "192.168.0.2:20001", now-1)
	// A dead flow whose port another flow took since: the reply entry is the new flow's.
	stale := newGCFlow("203.0.113.10:40002", "192.168.0.2:30080", "10.0.1.1:8080", "192.168.0.2:20002", now-1)
	taker := newGCFlow("203.0.113.20:50000", "192.168.0.2:30080", "10.0.1.1:8080", "192.168.0.2:20002", now+10e9)
	orphan := newGCFlow("203.0.113.10:40003", "192.168.0.2:30080", "10.0.1.1:8080", "192.168.0.2:20003", now+10e9)
	for _, f := range []gcFlow{live, over, taker} {
		f.put(t, m)
	}
	if err := m.Put(stale.fk, stale.fv); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(orphan.rk, orphan.rv); err != nil { // its forward entry is not there
		t.Fatal(err)
	}

	n, err := g.collect()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		k    tcCtKey
		want bool
	}{
		{"a live flow's forward entry", live.fk, true},
		{"a live flow's reply entry", live.rk, true},
		{"an expired flow's forward entry", over.fk, false},
		{"an expired flow's reply entry", over.rk, false},
		{"an expired flow's forward entry whose port went to another", stale.fk, false},
		{"the reply entry of the flow that took the port", taker.rk, true},
		{"a reply entry without its flow, first seen", orphan.rk, true},
	} {
		if got := has(m, c.k); got != c.want {
			t.Errorf("after one pass, %s is there: %v, want %v", c.what, got, c.want)
		}
	}
	if n != 3 || g.entries.Load() != 8 {
		t.Errorf("deleted %d of %d entries, want 3 of 8", n, g.entries.Load())
	}
	if _, err := g.collect(); err != nil {
		t.Fatal(err)
	}
	if has(m, orphan.rk) {
		t.Error("a reply entry without its flow in two passes is still there")
	}
	if !has(m, live.fk) || !has(m, live.rk) || !has(m, taker.rk) {
		t.Error("the second pass deleted a live flow")
	}
}

func TestSNATPortsLeaveTheNodePortRange(t *testing.T) {
	for _, c := range []struct {
		nodePorts portSpan
		want      tcSnatPorts
	}{
		{portSpan{30000, 32767}, tcSnatPorts{Min: [4]uint32{1024, 32768}, Span: [4]uint32{28976, 32768}}},
		{portSpan{1, 0}, tcSnatPorts{Min: [4]uint32{1024}, Span: [4]uint32{64512}}},
		{portSpan{1, 1024}, tcSnatPorts{Min: [4]uint32{1025}, Span: [4]uint32{64511}}},
		{portSpan{60000, 65535}, tcSnatPorts{Min: [4]uint32{1024}, Span: [4]uint32{58976}}},
		{portSpan{1, 65535}, tcSnatPorts{}},
	} {
		if got := snatPortsFor(c.nodePorts); got != c.want {
			t.Errorf("NodePorts %v: %+v, want %+v", c.nodePorts, got, c.want)
		}
	}
}

func TestDropsSince(t *testing.T) {
	last := map[string]uint64{"drop_no_snat_port": 5, "ct_full": 0, "error": 2, "new_flow": 10}
	now := map[string]uint64{"drop_no_snat_port": 12, "ct_full": 0, "error": 2, "new_flow": 900}
	got := dropsSince(last, now)
	if len(got) != 1 || got[0] != (drop{"drop_no_snat_port", 7}) {
		t.Errorf("dropsSince: %v, want drop_no_snat_port 7 alone", got)
	}
	if got := dropsSince(nil, now); len(got) != 0 {
		t.Errorf("dropsSince without a last reading: %v, want nothing", got)
	}
}
