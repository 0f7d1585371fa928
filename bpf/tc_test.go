package bpf

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/test/topology"
)

// The tc programs on crafted packets (BPF_PROG_TEST_RUN), run in the node
// namespace of a topology so bpf_fib_lookup sees the node's routes: DNAT, SNAT,
// reverse NAT, checksums, ICMP errors, REJECT and source ranges.

const (
	tcOK       = 0
	tcShot     = 2
	tcRedirect = 7
)

const (
	nodeIP4    = "192.168.0.2"
	nodeIP6    = "2001:db8::2"
	client4    = "203.0.113.10:40000"
	client6    = "[2001:db8:1::10]:40000"
	npTCP      = "192.168.0.2:30080"
	npUDP      = "192.168.0.2:30053"
	npReject   = "192.168.0.2:30099"
	npTCP6     = "[2001:db8::2]:30080"
	npReject6  = "[2001:db8::2]:30099"
	lbRanges   = "192.0.2.50:80"
	notService = "192.168.0.2:22"
)

type natEnv struct {
	objs *Objects
	ns   string
}

func newNATEnv(t *testing.T) *natEnv {
	t.Helper()
	return newNATEnvWith(t, LoadOptions{MaxServices: 1024, MaxBackends: 1024})
}

func newNATEnvWith(t *testing.T, opts LoadOptions) *natEnv {
	t.Helper()
	topo := support.Build(t, scenario())
	objs, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := objs.Close(); err != nil {
			t.Error(err)
		}
	})
	w := NewWriter(NewKernelMap[sockSvcKey, sockSvcVal](objs.Services), NewKernelMap[uint32, sockBackend](objs.Backends),
		NewKernelMap[tcRangeKey, uint8](objs.TC.SourceRanges))
	if err := w.Sync(context.Background(), tcState(), nil); err != nil {
		t.Fatal(err)
	}
	nat := newNATConfig(&objs.TC, dataplane.DefaultConfig().NodePortRange)
	if err := nat.setPortRange(); err != nil {
		t.Fatal(err)
	}
	if err := nat.setNodeIPs([]netip.Addr{netip.MustParseAddr(nodeIP4), netip.MustParseAddr(nodeIP6)}, true); err != nil {
		t.Fatal(err)
	}
	if err := nat.setClusterCIDRs([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}); err != nil {
		t.Fatal(err)
	}
	return &natEnv{objs: objs, ns: topo.NodeNS()}
}

// tcState: the frontends of the tests, with their Outside routes.
func tcState() *dataplane.State {
	st := dataplane.NewState()
	add := func(fe, proto string, r dataplane.Route, ranges ...string) {
		ap := netip.MustParseAddrPort(fe)
		f := &dataplane.FrontendState{
			Frontend: dataplane.Frontend{FrontendKey: dataplane.FrontendKey{Addr: ap.Addr(), Port: ap.Port(), Protocol: dataplane.Protocol(proto)}, Type: dataplane.NodePort},
			Service:  dataplane.ServicePort{ServiceName: dataplane.ServiceName{Namespace: "ns", Name: fe}, Protocol: dataplane.Protocol(proto)},
			Outside:  r,
		}
		for _, p := range ranges {
			f.SourceRanges = append(f.SourceRanges, netip.MustParsePrefix(p))
		}
		st.Frontends[f.FrontendKey] = f
	}
	masq := func(backends ...string) dataplane.Route {
		r := dataplane.Route{Masquerade: true}
		for _, b := range backends {
			r.Backends = append(r.Backends, ep(b))
		}
		return r
	}
	add(npTCP, "TCP", masq(pod1TCP))
	add(npUDP, "UDP", masq(pod1UDP))
	add(npReject, "TCP", dataplane.Route{Verdict: dataplane.Reject})
	add(npReject, "UDP", dataplane.Route{Verdict: dataplane.Reject})
	add(npTCP6, "TCP", masq(pod6TCP))
	add(npReject6, "TCP", dataplane.Route{Verdict: dataplane.Reject})
	add(lbRanges, "TCP", dataplane.Route{Backends: []dataplane.Endpoint{ep(pod2TCP)}}, "203.0.113.0/24")
	return st
}

// run passes one frame through prog in the node namespace.
func (e *natEnv) run(t *testing.T, prog *ebpf.Program, in pkt) (uint32, seen) {
	t.Helper()
	return e.runFrom(t, prog, in, 0)
}

// runFrom runs prog on in as a packet that came in on the device with index iif (0: the node's
// own, as every packet of run).
func (e *natEnv) runFrom(t *testing.T, prog *ebpf.Program, in pkt, iif uint32) (uint32, seen) {
	t.Helper()
	var ret uint32
	out := make([]byte, 1600)
	err := topology.OnThreadIn(e.ns, func() error {
		opts := &ebpf.RunOptions{Data: in.frame(), DataOut: out}
		if iif != 0 {
			// struct __sk_buff up to ingress_ifindex, the only field set.
			var ctx [10]uint32
			ctx[9] = iif
			opts.Context = ctx
		}
		var err error
		ret, err = prog.Run(opts)
		out = opts.DataOut
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseFrame(out)
	if err != nil {
		t.Errorf("%s: the program's output: %v", in.describe(), err)
	}
	return ret, s
}

func (p pkt) describe() string {
	return seen{src: p.src, dst: p.dst, proto: p.proto, icmpType: p.icmpType, icmpCode: p.icmpCode}.String()
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func tcp(src, dst string) pkt {
	return pkt{src: ap(src), dst: ap(dst), proto: protoTCP, tcpFlags: tcpSYN, payload: []byte("hello")}
}

func udp(src, dst string) pkt {
	return pkt{src: ap(src), dst: ap(dst), proto: protoUDP, payload: []byte("hello")}
}

// icmpErr is an ICMP error from src to dst about the packet about.
func icmpErr(src, dst string, typ, code uint8, about pkt) pkt {
	proto := uint8(protoICMP)
	if netip.MustParseAddr(src).Is6() {
		proto = protoICMPv6
	}
	quote := about.ipBytes()
	quote = quote[:min(len(quote), 48)] // routers quote at least the headers and 8 bytes
	return pkt{src: netip.AddrPortFrom(netip.MustParseAddr(src), 0), dst: netip.AddrPortFrom(netip.MustParseAddr(dst), 0),
		proto: proto, icmpType: typ, icmpCode: code, inner: quote}
}

func want(t *testing.T, what string, got seen, ret uint32, wantRet uint32, wantPkt string) {
	t.Helper()
	if ret != wantRet || got.String() != wantPkt {
		t.Errorf("%s:\n got %d %s\nwant %d %s", what, ret, got, wantRet, wantPkt)
	}
}

func snatPort(t *testing.T, s seen) uint16 {
	t.Helper()
	if p := s.src.Port(); p < 1024 || (p >= 30000 && p < 32768) {
		t.Errorf("SNAT port %d is in the NodePort range (30000-32767) or below 1024", p)
	}
	return s.src.Port()
}

func TestTCNodePortTCP(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	ret, fwd := e.run(t, p.ExtIngress, tcp(client4, npTCP))
	port := snatPort(t, fwd)
	want(t, "DNAT and SNAT", fwd, ret, tcRedirect, fmt.Sprintf("6 %s:%d -> %s", nodeIP4, port, pod1TCP))
	if fwd.ttl != 63 {
		t.Errorf("forwarded with TTL %d, want 63", fwd.ttl)
	}
	// The next packet of the flow gets the same translation.
	ret, again := e.run(t, p.ExtIngress, tcp(client4, npTCP))
	want(t, "the flow's next packet", again, ret, tcRedirect, fwd.String())

	reply := pkt{src: ap(pod1TCP), dst: netip.AddrPortFrom(netip.MustParseAddr(nodeIP4), port), proto: protoTCP, tcpFlags: tcpSYN | tcpACK}
	ret, back := e.run(t, p.PodIngress, reply)
	want(t, "reverse NAT of the backend's reply", back, ret, tcRedirect, "6 "+npTCP+" -> "+client4)

	// Another client gets its own source port.
	ret, other := e.run(t, p.ExtIngress, tcp("203.0.113.11:40000", npTCP))
	if snatPort(t, other) == port {
		t.Errorf("two flows share SNAT port %d", port)
	}
	_ = ret
}

// The node's own connection from the port a masqueraded flow holds towards the same pod (the
// kernel checks only its sockets) leaves on another port, its replies come back to it, and the
// flow keeps its port; the flow's own packets, which came in on a device, are not taken for it.
func TestTCNodeConnectionOnAFlowsPort(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	for _, c := range []struct {
		proto      uint8
		np, pod    string
		tcp, reply uint8
	}{{protoTCP, npTCP, pod1TCP, tcpSYN, tcpSYN | tcpACK}, {protoUDP, npUDP, pod1UDP, 0, 0}} {
		in := pkt{src: ap(client4), dst: ap(c.np), proto: c.proto, tcpFlags: c.tcp, payload: []byte("hello")}
		ret, fwd := e.run(t, p.ExtIngress, in)
		held := fwd.src
		want(t, "the flow from outside", fwd, ret, tcRedirect, fmt.Sprintf("%d %s -> %s", c.proto, held, c.pod))

		// The flow's own packet, forwarded to the pod's veth, is left as it is.
		own := pkt{src: held, dst: ap(c.pod), proto: c.proto, tcpFlags: c.tcp, payload: []byte("hello")}
		ret, got := e.runFrom(t, p.PodEgress, own, 1)
		want(t, "the flow's packet on the pod's veth", got, ret, tcOK, own.describe())

		ret, moved := e.run(t, p.PodEgress, own)
		if ret != tcOK || moved.src.Addr() != held.Addr() || moved.src.Port() == held.Port() || moved.dst != ap(c.pod) {
			t.Fatalf("the node's own %s from %s: %d %s, want it sent on another port of %s", in.describe(), held, ret, moved, held.Addr())
		}
		ret, again := e.run(t, p.PodEgress, own)
		want(t, "the node's connection, its next packet", again, ret, tcOK, moved.String())

		back := pkt{src: ap(c.pod), dst: moved.src, proto: c.proto, tcpFlags: c.reply, payload: []byte("hi")}
		ret, got = e.run(t, p.PodIngress, back)
		want(t, "the pod's reply to the node's connection, up the node's stack", got, ret, tcOK,
			fmt.Sprintf("%d %s -> %s", c.proto, c.pod, held))
		back.dst = held
		ret, got = e.run(t, p.PodIngress, back)
		want(t, "the pod's reply to the flow from outside", got, ret, tcRedirect, fmt.Sprintf("%d %s -> %s", c.proto, c.np, client4))
	}
}

func TestTCNodePortIPv6(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	ret, fwd := e.run(t, p.ExtIngress, tcp(client6, npTCP6))
	port := snatPort(t, fwd)
	want(t, "IPv6 DNAT and SNAT", fwd, ret, tcRedirect, fmt.Sprintf("6 [%s]:%d -> %s", nodeIP6, port, pod6TCP))
	reply := pkt{src: ap(pod6TCP), dst: netip.AddrPortFrom(netip.MustParseAddr(nodeIP6), port), proto: protoTCP, tcpFlags: tcpSYN | tcpACK}
	ret, back := e.run(t, p.PodIngress, reply)
	want(t, "IPv6 reverse NAT", back, ret, tcRedirect, "6 "+npTCP6+" -> "+client6)
}

// A UDP backend's "port unreachable" reaches the client about the packet it
// sent (to the NodePort), and a router's "fragmentation needed" about a reply
// reaches the backend about the packet it sent.
func TestTCICMPErrors(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	_, fwd := e.run(t, p.ExtIngress, udp(client4, npUDP))
	sent := pkt{src: fwd.src, dst: fwd.dst, proto: protoUDP, payload: []byte("hello")}
	ret, got := e.run(t, p.PodIngress, icmpErr("10.0.1.1", nodeIP4, 3, 3, sent))
	want(t, "port unreachable from the backend", got, ret, tcRedirect,
		fmt.Sprintf("1 %s:0 -> %s:0 icmp 3/3 about [17 %s -> %s]", nodeIP4, ap(client4).Addr(), client4, npUDP))

	_, tfwd := e.run(t, p.ExtIngress, tcp(client4, npTCP))
	replyOut := pkt{src: ap(npTCP), dst: ap(client4), proto: protoTCP, tcpFlags: tcpACK}
	ret, got = e.run(t, p.ExtIngress, icmpErr("198.51.100.1", nodeIP4, 3, 4, replyOut))
	want(t, "fragmentation needed from a router", got, ret, tcRedirect,
		fmt.Sprintf("1 198.51.100.1:0 -> 10.0.1.1:0 icmp 3/4 about [6 %s -> %s]", pod1TCP, tfwd.src))

	// IPv6: packet too big.
	_, f6 := e.run(t, p.ExtIngress, tcp(client6, npTCP6))
	reply6 := pkt{src: ap(npTCP6), dst: ap(client6), proto: protoTCP, tcpFlags: tcpACK}
	ret, got = e.run(t, p.ExtIngress, icmpErr("2001:db8:ff::1", nodeIP6, 2, 0, reply6))
	want(t, "IPv6 packet too big", got, ret, tcRedirect,
		fmt.Sprintf("58 [2001:db8:ff::1]:0 -> [fd00:10::1]:0 icmp 2/0 about [6 %s -> %s]", pod6TCP, f6.src))
}

func TestTCReject(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	for _, c := range []struct {
		in   pkt
		want string
	}{
		{tcp(client4, npReject), fmt.Sprintf("1 %s:0 -> %s:0 icmp 3/3 about [6 %s -> %s]", nodeIP4, ap(client4).Addr(), client4, npReject)},
		{udp(client4, npReject), fmt.Sprintf("1 %s:0 -> %s:0 icmp 3/3 about [17 %s -> %s]", nodeIP4, ap(client4).Addr(), client4, npReject)},
		{tcp(client6, npReject6), fmt.Sprintf("58 [%s]:0 -> [2001:db8:1::10]:0 icmp 1/4 about [6 %s -> %s]", nodeIP6, client6, npReject6)},
	} {
		ret, got := e.run(t, p.ExtIngress, c.in)
		want(t, "REJECT of "+c.in.describe(), got, ret, tcRedirect, c.want)
		if string(got.dstMAC) != string(macA) {
			t.Errorf("the refusal goes to MAC %x, want the sender's %x", got.dstMAC, macA)
		}
		// A checksum offload completing the quoted header's checksum (sum from that
		// header to the end of the packet) must leave it, and so the ICMP checksum, as it is.
		if q := got.inner; q != nil {
			at := 16
			if q.proto == protoUDP {
				at = 6
			}
			if field, done := binary.BigEndian.Uint16(q.l4[at:]), fold(csum(0, q.l4)); field != done {
				t.Errorf("%s: quoted checksum %#x would be completed to %#x", c.in.describe(), field, done)
			}
		}
	}
}

func TestTCSourceRanges(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	ret, _ := e.run(t, p.ExtIngress, tcp("198.51.100.20:40000", lbRanges))
	if ret != tcShot {
		t.Errorf("a source outside the ranges: %d, want DROP (%d)", ret, tcShot)
	}
	ret, got := e.run(t, p.ExtIngress, tcp(client4, lbRanges))
	want(t, "a source inside the ranges, no masquerade", got, ret, tcRedirect, "6 "+client4+" -> "+pod2TCP)
}

// What is not a service passes untouched, and egress never starts a flow.
func TestTCLeavesOtherTrafficAlone(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	for _, in := range []pkt{tcp(client4, notService), udp(client6, "[2001:db8::2]:53")} {
		ret, got := e.run(t, p.ExtIngress, in)
		want(t, "not a service", got, ret, tcOK, in.describe())
	}
	ret, got := e.run(t, p.ExtEgress, tcp(client4, npTCP))
	want(t, "egress", got, ret, tcOK, tcp(client4, npTCP).describe())
	ret, got = e.run(t, p.PodIngress, tcp("10.0.1.1:1234", npTCP))
	want(t, "a pod's packet", got, ret, tcOK, tcp("10.0.1.1:1234", npTCP).describe())
}

// A TCP segment other than a SYN that no flow knows belongs to a connection the programs never
// saw (one kube-proxy's conntrack NATed before the handover): it goes on to the stack untouched,
// where load-balancing it afresh would reset it. A SYN on the same tuple starts a flow.
func TestTCMidFlowSegmentGoesToTheStack(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	mid := tcp(client4, npTCP)
	mid.tcpFlags = tcpACK
	ret, got := e.run(t, p.ExtIngress, mid)
	want(t, "an ACK with no flow", got, ret, tcOK, mid.describe())
	fin := mid
	fin.tcpFlags = tcpACK | 0x01
	ret, got = e.run(t, p.ExtIngress, fin)
	want(t, "a FIN with no flow", got, ret, tcOK, fin.describe())
	ret, _ = e.run(t, p.ExtIngress, tcp(client4, npTCP))
	if ret != tcRedirect {
		t.Errorf("a SYN on the tuple: %d, want a new flow", ret)
	}
	ret, got = e.run(t, p.ExtIngress, mid)
	if ret != tcRedirect || got.dst != ap(pod1TCP) {
		t.Errorf("the ACK once the flow exists: %d %s, want it translated to %s", ret, got, pod1TCP)
	}
	evs, err := TCEvents(p.Events)
	if err != nil {
		t.Fatal(err)
	}
	if evs["untracked"] != 2 || evs["new_flow"] != 1 {
		t.Errorf("events %v, want 2 untracked and 1 new flow", evs)
	}
}

// A connection that closed (FIN both ways, then the last ACK) is started over by a SYN on the same
// tuple, as conntrack reopens one, and the counters say so.
func TestTCClosedFlowReopens(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	syn := tcp(client4, npTCP)
	_, fwd := e.run(t, p.ExtIngress, syn)
	port := snatPort(t, fwd)
	fin := syn
	fin.tcpFlags = tcpACK | 0x01
	ret, got := e.run(t, p.ExtIngress, fin)
	want(t, "the client's FIN", got, ret, tcRedirect, fwd.String())
	backFin := pkt{src: ap(pod1TCP), dst: netip.AddrPortFrom(netip.MustParseAddr(nodeIP4), port), proto: protoTCP, tcpFlags: tcpACK | 0x01}
	ret, got = e.run(t, p.PodIngress, backFin)
	want(t, "the backend's FIN", got, ret, tcRedirect, "6 "+npTCP+" -> "+client4)
	lastAck := syn
	lastAck.tcpFlags = tcpACK
	ret, got = e.run(t, p.ExtIngress, lastAck)
	want(t, "the last ACK", got, ret, tcRedirect, fwd.String())
	ret, _ = e.run(t, p.ExtIngress, syn)
	if ret != tcRedirect {
		t.Errorf("a new SYN on the closed tuple: %d", ret)
	}
	evs, err := TCEvents(p.Events)
	if err != nil {
		t.Fatal(err)
	}
	if evs["new_flow"] != 2 || evs["reopen"] != 1 {
		t.Errorf("events %v, want 2 new flows and 1 reopen", evs)
	}
}

// UDP both ways, IPv4 and IPv6; an IPv4 datagram without a checksum stays
// without one (0 means none; a computed 0 would be sent as 0xffff).
func TestTCUDP(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	for _, c := range []struct {
		in      pkt
		backend string
	}{
		{udp(client4, npUDP), pod1UDP},
		{pkt{src: ap("203.0.113.11:40000"), dst: ap(npUDP), proto: protoUDP, payload: []byte("x"), noUDPCsum: true}, pod1UDP},
	} {
		ret, fwd := e.run(t, p.ExtIngress, c.in)
		port := snatPort(t, fwd)
		want(t, "UDP DNAT and SNAT", fwd, ret, tcRedirect, fmt.Sprintf("17 %s:%d -> %s", nodeIP4, port, c.backend))
		if c.in.noUDPCsum && binary.BigEndian.Uint16(fwd.l4[6:]) != 0 {
			t.Errorf("a datagram without a checksum got one: %#x", binary.BigEndian.Uint16(fwd.l4[6:]))
		}
		reply := pkt{src: ap(c.backend), dst: netip.AddrPortFrom(netip.MustParseAddr(nodeIP4), port), proto: protoUDP, payload: []byte("reply")}
		ret, back := e.run(t, p.PodIngress, reply)
		want(t, "UDP reverse NAT", back, ret, tcRedirect, fmt.Sprintf("17 %s -> %s", npUDP, c.in.src))
	}
}

// Drained (a rollback to kube-proxy under way), the programs leave a new connection from outside
// to the stack untouched, and go on translating the flows they carry, which LiveFlows counts until
// they close; loading the programs again ends the drain.
func TestTCDrainLeavesNewFlowsToTheStack(t *testing.T) {
	pinDir := testPinDir(t, "drain")
	e := newNATEnvWith(t, LoadOptions{PinDir: pinDir, MaxServices: 1024, MaxBackends: 1024})
	p := e.objs.TC
	syn := tcp(client4, npTCP)
	ret, fwd := e.run(t, p.ExtIngress, syn)
	if ret != tcRedirect {
		t.Fatalf("a SYN before the drain: %d, want a new flow", ret)
	}
	if ok, err := Drain(pinDir); !ok || err != nil {
		t.Fatalf("Drain: %v, %v", ok, err)
	}
	other := syn
	other.src = netip.AddrPortFrom(syn.src.Addr(), syn.src.Port()+1)
	ret, got := e.run(t, p.ExtIngress, other)
	want(t, "a new connection while draining", got, ret, tcOK, other.describe())
	ack := syn
	ack.tcpFlags = tcpACK
	if ret, got := e.run(t, p.ExtIngress, ack); ret != tcRedirect || got.dst != ap(pod1TCP) {
		t.Errorf("the flow under way while draining: %d %s, want it translated to %s", ret, got, pod1TCP)
	}
	if n, err := LiveFlows(pinDir); n != 1 || err != nil {
		t.Errorf("LiveFlows = %d, %v; want the one flow", n, err)
	}
	rst := syn
	rst.tcpFlags = 0x04
	e.run(t, p.ExtIngress, rst)
	if n, err := LiveFlows(pinDir); n != 0 || err != nil {
		t.Errorf("LiveFlows after a reset = %d, %v; want 0", n, err)
	}
	// kube-proxy's connection from the same port to the same pod: its replies are not the
	// closed flow's.
	synAck := pkt{src: ap(pod1TCP), dst: fwd.src, proto: protoTCP, tcpFlags: tcpSYN | tcpACK}
	ret, got = e.run(t, p.PodIngress, synAck)
	want(t, "a reply on a closed flow's port while draining", got, ret, tcOK, synAck.describe())
	evs, err := TCEvents(p.Events)
	if err != nil {
		t.Fatal(err)
	}
	if evs["drained"] != 1 || evs["new_flow"] != 1 {
		t.Errorf("events %v, want 1 drained and 1 new flow", evs)
	}
	again, err := Load(LoadOptions{PinDir: pinDir, MaxServices: 1024, MaxBackends: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	var flags uint32
	if err := again.TC.Flags.Lookup(uint32(0), &flags); err != nil || flags != 0 {
		t.Errorf("lb_flags after a new load = %d, %v; want 0 (serving)", flags, err)
	}
	if ok, err := Drain(filepath.Join(pinDir, "nothing")); ok || err != nil {
		t.Errorf("Drain with nothing pinned: %v, %v; want false, nil", ok, err)
	}
}

// A pinned counters map of another version's size (one event fewer) does not stop an upgrade:
// Load replaces it, where a map with state would be refused.
func TestLoadReplacesStaleCounters(t *testing.T) {
	pinDir := testPinDir(t, "stale")
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(filepath.Join(pinDir, mapTCEvents)); err != nil {
		t.Fatal(err)
	}
	o, err := Load(LoadOptions{PinDir: pinDir, MaxServices: 64, MaxBackends: 64})
	if err != nil {
		t.Fatalf("load over an old counters map: %v", err)
	}
	defer o.Close()
	if n := o.TC.Events.MaxEntries(); n != 32 {
		t.Errorf("lb_events has %d entries, want this build's 32", n)
	}
}

// A port conntrack's NAT holds towards the backend (a connection kube-proxy masqueraded, which
// nat_taken lists) is not given to a flow, even when it is the client's own port.
func TestTCSNATAvoidsConntrackNATPorts(t *testing.T) {
	e := newNATEnv(t)
	p := e.objs.TC
	c := ap(client4)
	taken := tcCtKey{Saddr: addr16(ap(pod1TCP).Addr()), Daddr: addr16(netip.MustParseAddr(nodeIP4)),
		Sport: htons(ap(pod1TCP).Port()), Dport: htons(c.Port()), Proto: protoTCP}
	if err := p.NATTaken.Put(taken, uint8(1)); err != nil {
		t.Fatal(err)
	}
	ret, fwd := e.run(t, p.ExtIngress, tcp(client4, npTCP))
	if ret != tcRedirect || fwd.dst != ap(pod1TCP) || snatPort(t, fwd) == c.Port() {
		t.Errorf("a SYN from %s: %d %s, want it sent to %s from any port but %d", client4, ret, fwd, pod1TCP, c.Port())
	}
	if err := p.NATTaken.Delete(taken); err != nil {
		t.Fatal(err)
	}
	other := tcp("203.0.113.11:40000", npTCP)
	if _, fwd := e.run(t, p.ExtIngress, other); snatPort(t, fwd) != c.Port() {
		t.Errorf("with the port free again, another client from port %d got SNAT port %d, want its own", c.Port(), fwd.src.Port())
	}
}
