package bpf

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Crafting and checking packets for BPF_PROG_TEST_RUN: Ethernet, IPv4 (no
// options) or IPv6 (no extension headers), TCP, UDP, ICMP and ICMPv6, with real
// checksums, so a test sees every checksum the programs get wrong.

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	tcpFIN      = 0x01
	tcpSYN      = 0x02
	tcpRST      = 0x04
	tcpACK      = 0x10
)

// pkt is a packet as the tests describe it.
type pkt struct {
	src, dst netip.AddrPort // ports are ignored for ICMP
	proto    uint8
	ttl      uint8
	tcpFlags uint8
	payload  []byte
	// ICMP errors: type, code and the packet they are about (its first bytes).
	icmpType, icmpCode uint8
	inner              []byte
	noUDPCsum          bool // IPv4 UDP sent without a checksum (0)
	// TCP: sequence and acknowledgment numbers (seq 0 is sent as 1000), and a
	// timestamp option with this TSval when non-zero.
	seq, ack, tsval uint32
}

func csum(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func pseudo(src, dst netip.Addr, proto uint8, length int) uint32 {
	s := csum(0, src.AsSlice())
	s = csum(s, dst.AsSlice())
	return s + uint32(proto) + uint32(length)
}

// ipBytes builds the IP packet (no Ethernet header).
func (p pkt) ipBytes() []byte {
	v6 := p.src.Addr().Is6()
	l4 := p.l4(v6)
	if p.ttl == 0 {
		p.ttl = 64
	}
	if !v6 {
		h := make([]byte, 20)
		h[0], h[8], h[9] = 0x45, p.ttl, p.proto
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		copy(h[12:], p.src.Addr().AsSlice())
		copy(h[16:], p.dst.Addr().AsSlice())
		binary.BigEndian.PutUint16(h[10:], fold(csum(0, h)))
		return append(h, l4...)
	}
	h := make([]byte, 40)
	h[0], h[6], h[7] = 0x60, p.proto, p.ttl
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	copy(h[8:], p.src.Addr().AsSlice())
	copy(h[24:], p.dst.Addr().AsSlice())
	return append(h, l4...)
}

func (p pkt) l4(v6 bool) []byte {
	var b []byte
	var csumAt int
	switch p.proto {
	case protoTCP:
		b = make([]byte, 20)
		b[12], b[13], csumAt = 5<<4, p.tcpFlags, 16
		seq := p.seq
		if seq == 0 {
			seq = 1000
		}
		binary.BigEndian.PutUint32(b[4:], seq)
		binary.BigEndian.PutUint32(b[8:], p.ack)
		if p.tsval != 0 { // NOP, NOP, timestamp (kind 8, length 10, TSval, TSecr), as Linux sends it
			b[12] = 8 << 4
			b = append(b, 1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0)
			binary.BigEndian.PutUint32(b[24:], p.tsval)
		}
	case protoUDP:
		b, csumAt = make([]byte, 8), 6
	default: // ICMP / ICMPv6
		b = make([]byte, 8)
		b[0], b[1], csumAt = p.icmpType, p.icmpCode, 2
		b = append(b, p.inner...)
	}
	if p.proto == protoTCP || p.proto == protoUDP {
		binary.BigEndian.PutUint16(b[0:], p.src.Port())
		binary.BigEndian.PutUint16(b[2:], p.dst.Port())
	}
	b = append(b, p.payload...)
	if p.proto == protoUDP {
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	}
	var s uint32
	if p.proto != protoICMP {
		s = pseudo(p.src.Addr(), p.dst.Addr(), p.proto, len(b))
	}
	c := fold(csum(s, b))
	if c == 0 && p.proto == protoUDP {
		c = 0xffff
	}
	if p.noUDPCsum {
		c = 0
	}
	binary.BigEndian.PutUint16(b[csumAt:], c)
	return b
}

var (
	macA = []byte{2, 0, 0, 0, 0, 0xa}
	macB = []byte{2, 0, 0, 0, 0, 0xb}
)

// frame is the packet on the wire: from macA to macB.
func (p pkt) frame() []byte {
	eth := append(append(append([]byte{}, macB...), macA...), 0x08, 0x00)
	if p.src.Addr().Is6() {
		eth[12], eth[13] = 0x86, 0xdd
	}
	return append(eth, p.ipBytes()...)
}

// seen is what a test reads back from a packet.
type seen struct {
	src, dst           netip.AddrPort
	proto, ttl         uint8
	icmpType, icmpCode uint8
	inner              *seen // ICMP errors: the packet quoted
	dstMAC             []byte
	l4                 []byte // the transport header and payload
}

func (s seen) String() string {
	out := fmt.Sprintf("%d %s -> %s", s.proto, s.src, s.dst)
	if s.proto == protoICMP || s.proto == protoICMPv6 {
		out += fmt.Sprintf(" icmp %d/%d", s.icmpType, s.icmpCode)
		if s.inner != nil {
			out += " about [" + s.inner.String() + "]"
		}
	}
	return out
}

// parseFrame reads a frame and checks every checksum in it.
func parseFrame(b []byte) (seen, error) {
	if len(b) < 14 {
		return seen{}, fmt.Errorf("%d bytes: no Ethernet header", len(b))
	}
	s, err := parseIP(b[14:], true)
	s.dstMAC = b[:6]
	return s, err
}

// parseIP reads an IP packet; full says it is not a truncated quote (whose
// length fields and transport checksum are not checked).
func parseIP(b []byte, full bool) (seen, error) {
	var s seen
	var l4 []byte
	var src, dst netip.Addr
	switch {
	case len(b) >= 20 && b[0] == 0x45:
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		s.proto, s.ttl, l4 = b[9], b[8], b[20:]
		if c := fold(csum(0, b[:20])); c != 0 {
			return s, fmt.Errorf("bad IPv4 header checksum")
		}
		if full && int(binary.BigEndian.Uint16(b[2:])) != len(b) {
			return s, fmt.Errorf("IPv4 length %d, packet %d", binary.BigEndian.Uint16(b[2:]), len(b))
		}
	case len(b) >= 40 && b[0]>>4 == 6:
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		s.proto, s.ttl, l4 = b[6], b[7], b[40:]
		if full && int(binary.BigEndian.Uint16(b[4:])) != len(l4) {
			return s, fmt.Errorf("IPv6 payload length %d, have %d", binary.BigEndian.Uint16(b[4:]), len(l4))
		}
	default:
		return s, fmt.Errorf("not an IP packet: % x", b[:min(len(b), 20)])
	}
	if len(l4) < 8 {
		return s, fmt.Errorf("%d bytes of transport header", len(l4))
	}
	s.src, s.dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	s.l4 = l4
	switch s.proto {
	case protoTCP, protoUDP:
		s.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4))
		s.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
		if !full {
			return s, nil
		}
		if s.proto == protoUDP && src.Is4() && binary.BigEndian.Uint16(l4[6:]) == 0 {
			return s, nil // no checksum
		}
		if fold(csum(pseudo(src, dst, s.proto, len(l4)), l4)) != 0 {
			return s, fmt.Errorf("bad %d checksum", s.proto)
		}
	case protoICMP, protoICMPv6:
		s.icmpType, s.icmpCode = l4[0], l4[1]
		var ps uint32
		if s.proto == protoICMPv6 {
			ps = pseudo(src, dst, s.proto, len(l4))
		}
		if fold(csum(ps, l4)) != 0 {
			return s, fmt.Errorf("bad ICMP checksum")
		}
		if len(l4) > 8 {
			in, err := parseIP(l4[8:], false)
			if err != nil {
				return s, fmt.Errorf("quoted packet: %w", err)
			}
			s.inner = &in
		}
	}
	return s, nil
}
