package bpf

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// How the tc programs track a masqueraded TCP connection through its life, and
// when its masquerade port may go to another: the rules of may_take_over, on
// crafted packets, with the masquerade ports narrowed to one so that a second
// client must take the first one's port or be dropped.

const backendSeq = 5000

// conn is one client's connection to npTCP (backend pod1TCP) as the tests drive it.
type conn struct {
	e      *natEnv
	t      *testing.T
	client string
	seq    uint32 // the client's next sequence number
	ts     uint32 // the client's next TSval (0: no timestamps)
	port   uint16 // its masquerade port
}

func (c *conn) fromClient(flags uint8) (uint32, seen) {
	p := pkt{src: ap(c.client), dst: ap(npTCP), proto: protoTCP, tcpFlags: flags, seq: c.seq, ack: backendSeq + 1, tsval: c.ts}
	if c.ts != 0 {
		c.ts++
	}
	return c.e.run(c.t, c.e.objs.TC.ExtIngress, p)
}

func (c *conn) fromBackend(flags uint8, seq, ack uint32) (uint32, seen) {
	p := pkt{src: ap(pod1TCP), dst: netip.AddrPortFrom(netip.MustParseAddr(nodeIP4), c.port), proto: protoTCP,
		tcpFlags: flags, seq: seq, ack: ack, tsval: 1}
	return c.e.run(c.t, c.e.objs.TC.PodIngress, p)
}

// open sends the handshake: SYN, SYN-ACK, ACK. It returns false when the SYN was dropped.
func (c *conn) open() bool {
	c.t.Helper()
	ret, fwd := c.fromClient(tcpSYN)
	if ret != tcRedirect {
		return false
	}
	c.port = fwd.src.Port()
	want(c.t, c.client+" SYN", fwd, ret, tcRedirect, fmt.Sprintf("6 %s:%d -> %s", nodeIP4, c.port, pod1TCP))
	c.seq++
	ret, back := c.fromBackend(tcpSYN|tcpACK, backendSeq, c.seq)
	want(c.t, c.client+" SYN-ACK", back, ret, tcRedirect, "6 "+npTCP+" -> "+c.client)
	ret, fwd = c.fromClient(tcpACK)
	want(c.t, c.client+" ACK", fwd, ret, tcRedirect, fmt.Sprintf("6 %s:%d -> %s", nodeIP4, c.port, pod1TCP))
	return true
}

// closeClientFirst: the client's FIN, the backend's FIN acknowledging it, the client's last ACK.
// The backend closes second: no TIME_WAIT there.
func (c *conn) closeClientFirst() {
	c.t.Helper()
	c.fromClient(tcpFIN | tcpACK)
	c.seq++
	c.fromBackend(tcpFIN|tcpACK, backendSeq+1, c.seq)
	c.fromClient(tcpACK)
}

// closeBackendFirst: the backend's FIN, the client's FIN, the backend's last ACK. The backend
// holds the tuple in TIME_WAIT.
func (c *conn) closeBackendFirst() {
	c.t.Helper()
	c.fromBackend(tcpFIN|tcpACK, backendSeq+1, c.seq)
	c.fromClient(tcpFIN | tcpACK)
	c.seq++
	c.fromBackend(tcpACK, backendSeq+2, c.seq)
}

func newConn(t *testing.T, e *natEnv, client string, seq, ts uint32) *conn {
	return &conn{e: e, t: t, client: client, seq: seq, ts: ts}
}

// onePort narrows the masquerade ports to port.
func (e *natEnv) onePort(t *testing.T, port uint16) {
	t.Helper()
	if err := e.objs.TC.SNATPorts.Put(uint32(0), tcSnatPorts{Min: [4]uint32{uint32(port)}, Span: [4]uint32{1}}); err != nil {
		t.Fatal(err)
	}
}

func (e *natEnv) events(t *testing.T) map[string]uint64 {
	t.Helper()
	evs, err := TCEvents(e.objs.TC.Events)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestTCMasqueradePortReuse(t *testing.T) {
	e := newNATEnv(t)
	for i, c := range []struct {
		name string
		// the first connection's close, and the second client's SYN: sequence number relative to
		// the first's last, and TSval (0: none)
		close        func(*conn)
		ts1          uint32
		seq2, ts2    uint32
		wantTakeover bool
	}{
		{name: "client closed first: the backend forgot the tuple", close: (*conn).closeClientFirst, seq2: 1, wantTakeover: true},
		{name: "client closed first, any sequence number", close: (*conn).closeClientFirst, seq2: 1 << 31, wantTakeover: true},
		{name: "backend in TIME_WAIT, SYN after its rcv_nxt", close: (*conn).closeBackendFirst, seq2: 100, wantTakeover: true},
		{name: "backend in TIME_WAIT, SYN at its rcv_nxt", close: (*conn).closeBackendFirst, seq2: 0},
		{name: "backend in TIME_WAIT, SYN before its rcv_nxt", close: (*conn).closeBackendFirst, seq2: -100 & 0xffffffff},
		{name: "TIME_WAIT with timestamps, newer TSval", close: (*conn).closeBackendFirst, ts1: 500, seq2: -100 & 0xffffffff, ts2: 600, wantTakeover: true},
		{name: "TIME_WAIT with timestamps, older TSval (PAWS)", close: (*conn).closeBackendFirst, ts1: 500, seq2: 100, ts2: 400},
		{name: "TIME_WAIT with timestamps, SYN without", close: (*conn).closeBackendFirst, ts1: 500, seq2: 100, wantTakeover: true},
		{name: "reset by the backend", close: func(c *conn) { c.fromBackend(tcpRST, backendSeq+1, 0) }, seq2: -100 & 0xffffffff, wantTakeover: true},
		{name: "still open", close: func(*conn) {}, seq2: 100},
	} {
		// One node for all: each case has its own clients and its own one masquerade port.
		port := uint16(20000 + i)
		t.Run(c.name, func(t *testing.T) {
			e.onePort(t, port)
			drops := e.events(t)["drop_no_snat_port"]
			first := newConn(t, e, fmt.Sprintf("203.0.113.10:%d", 40000+i), 7000, c.ts1)
			if !first.open() {
				t.Fatal("the first connection's SYN was dropped")
			}
			c.close(first)
			second := newConn(t, e, fmt.Sprintf("203.0.113.20:%d", 50000+i), first.seq+c.seq2, c.ts2)
			took := second.open()
			if took != c.wantTakeover {
				t.Fatalf("the second client's SYN took the port: %v, want %v (events %v)", took, c.wantTakeover, e.events(t))
			}
			if !took {
				if n := e.events(t)["drop_no_snat_port"] - drops; n != 1 {
					t.Errorf("drop_no_snat_port rose by %d, want 1", n)
				}
				return
			}
			// The first client's forward entry went with its port: its late ACK is not sent to
			// the backend as the second's (it starts over, and finds no port).
			if ret, got := first.fromClient(tcpACK); ret == tcRedirect && got.src.Port() == port {
				t.Errorf("a late packet of the first connection was translated onto the second's tuple: %s", got)
			}
		})
	}
}

// An established connection lives in ct_assured, which nothing evicts; a closed one goes back
// to ct_lru. Churn of new connections that fills ct_lru many times over leaves it working.
func TestTCEstablishedFlowOutlivesChurn(t *testing.T) {
	e := newNATEnvWith(t, LoadOptions{MaxServices: 1024, MaxBackends: 1024, CTMax: 1024})
	idle := newConn(t, e, client4, 7000, 0)
	if !idle.open() {
		t.Fatal("SYN dropped")
	}
	if n := countEntries(t, e.objs.TC.CTAssured); n != 2 {
		t.Errorf("ct_assured has %d entries after the handshake, want the flow's 2", n)
	}
	for i := range 5000 { // SYNs never answered, from other clients: 2 entries each in ct_lru (2048)
		src := fmt.Sprintf("198.51.100.%d:%d", 1+i%200, 10000+i)
		if ret, _ := e.run(t, e.objs.TC.ExtIngress, tcp(src, npTCP)); ret != tcRedirect {
			t.Fatalf("churn SYN %d: %d", i, ret)
		}
	}
	ret, fwd := idle.fromClient(tcpACK)
	want(t, "the idle connection after the churn", fwd, ret, tcRedirect, fmt.Sprintf("6 %s:%d -> %s", nodeIP4, idle.port, pod1TCP))
	ret, back := idle.fromBackend(tcpACK, backendSeq+1, idle.seq)
	want(t, "its reply", back, ret, tcRedirect, "6 "+npTCP+" -> "+client4)
	idle.closeClientFirst()
	if n := countEntries(t, e.objs.TC.CTAssured); n != 0 {
		t.Errorf("ct_assured has %d entries after the close, want 0", n)
	}
	if evs := e.events(t); evs["ct_full"] != 0 {
		t.Errorf("ct_full %d, want 0", evs["ct_full"])
	}
}

func countEntries(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	n := 0
	if err := (kernelMap[tcCtKey, tcCtVal]{m}).Each(func(tcCtKey, tcCtVal) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	return n
}

// When ct_assured is full (2 x --bpf-ct-max entries: 1,024 established connections here), the
// next connection to be established is counted as ct_full and goes on working from ct_lru,
// where eviction may take it; the connections already protected stay protected.
func TestTCFullAssuredMapIsCounted(t *testing.T) {
	e := newNATEnvWith(t, LoadOptions{MaxServices: 1024, MaxBackends: 1024, CTMax: 1024})
	var conns []*conn
	for i := range 1025 {
		c := newConn(t, e, fmt.Sprintf("198.51.100.%d:%d", 1+i%200, 10000+i), 7000, 0)
		if !c.open() {
			t.Fatalf("connection %d: SYN dropped", i)
		}
		conns = append(conns, c)
	}
	if n := countEntries(t, e.objs.TC.CTAssured); n != 2048 {
		t.Errorf("ct_assured has %d entries, want 2,048 (full)", n)
	}
	if evs := e.events(t); evs["ct_full"] != 1 {
		t.Errorf("ct_full %d, want 1 (the 1,025th connection)", evs["ct_full"])
	}
	for _, c := range []*conn{conns[0], conns[1024]} {
		ret, fwd := c.fromClient(tcpACK)
		want(t, "a connection's next packet", fwd, ret, tcRedirect, fmt.Sprintf("6 %s:%d -> %s", nodeIP4, c.port, pod1TCP))
	}
}

// A UDP flow lives 30 s as conntrack's does, and 120 s once it is a stream: the client sent again
// after a reply. The lifetimes are read from the flow's forward entry (its expires, on the
// clock of bpf_ktime_get_ns).
func TestTCUDPStreamLivesLonger(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	fk := tcCtKey{Saddr: addr16(ap(client4).Addr()), Daddr: addr16(ap(npUDP).Addr()), Sport: htons(ap(client4).Port()),
		Dport: htons(ap(npUDP).Port()), Proto: protoUDP}
	life := func(what string) time.Duration {
		t.Helper()
		var v tcCtVal
		if err := p.CTLRU.Lookup(&fk, &v); err != nil {
			if err := p.CTAssured.Lookup(&fk, &v); err != nil {
				t.Fatalf("%s: the flow's forward entry: %v", what, err)
			}
		}
		var now unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
			t.Fatal(err)
		}
		return time.Duration(int64(v.Expires) - now.Nano())
	}
	ret, fwd := e.run(t, p.ExtIngress, udp(client4, npUDP))
	if ret != tcRedirect {
		t.Fatalf("the request: %d", ret)
	}
	back := pkt{src: ap(pod1UDP), dst: fwd.src, proto: protoUDP, payload: []byte("hi")}
	if ret, _ := e.run(t, p.PodIngress, back); ret != tcRedirect {
		t.Fatalf("the reply: %d", ret)
	}
	if d := life("after a request and its reply"); d < 28*time.Second || d > 30*time.Second {
		t.Errorf("after a request and its reply the flow lives %v more, want 30 s", d)
	}
	if ret, _ := e.run(t, p.ExtIngress, udp(client4, npUDP)); ret != tcRedirect {
		t.Fatalf("the second request: %d", ret)
	}
	if d := life("a stream"); d < 118*time.Second || d > 120*time.Second {
		t.Errorf("once the client sent again after the reply the flow lives %v more, want 120 s", d)
	}
}
