package main

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

// listenUDP opens a wildcard UDP socket that reports each datagram's destination address (PKTINFO):
// a wildcard socket does not know which of the pod's addresses a datagram was sent to, and the reply
// must come from exactly that address or the client's connected socket drops it.
func listenUDP(port int) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: port})
	if err != nil {
		return nil, err
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		// A dual-stack (AF_INET6) socket reports IPv4 datagrams as IPv4-mapped IPV6_PKTINFO; an
		// AF_INET one (IPv6 disabled) needs IP_PKTINFO and rejects the IPv6 option.
		if syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO, 1) != nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO, 1)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("udp port %d: pktinfo: %w", port, err)
	}
	return c, nil
}

func serveUDP(c *net.UDPConn) error {
	port := c.LocalAddr().(*net.UDPAddr).Port
	v6 := c.LocalAddr().(*net.UDPAddr).IP.To4() == nil // an AF_INET6 (dual-stack) socket
	buf, oob := make([]byte, 65536), make([]byte, 512)
	for {
		_, oobn, _, from, err := c.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			return fmt.Errorf("udp read: %w", err)
		}
		dst, ok := pktinfoDst(oob[:oobn])
		if !ok {
			return fmt.Errorf("udp: no PKTINFO on a datagram from %s", from)
		}
		local := netip.AddrPortFrom(dst.Unmap(), uint16(port))
		peer := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		reply := []byte(fmt.Sprintf("%s %s\n", local, peer))
		// The sender may be gone (the probe timed out): nothing to do about it.
		_, _, _ = c.WriteMsgUDPAddrPort(reply, srcCmsg(v6, dst), from)
	}
}

// pktinfoDst extracts the datagram's destination address from IPV6_PKTINFO or IP_PKTINFO.
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IPV6 && m.Header.Type == syscall.IPV6_PKTINFO && len(m.Data) >= 16:
			return netip.AddrFrom16([16]byte(m.Data[:16])), true
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO && len(m.Data) >= 12:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }: addr is the header's.
			return netip.AddrFrom4([4]byte(m.Data[8:12])), true
		}
	}
	return netip.Addr{}, false
}

// srcCmsg builds the control message that makes the reply leave from src.
func srcCmsg(v6 bool, src netip.Addr) []byte {
	if v6 {
		b := make([]byte, syscall.CmsgSpace(syscall.SizeofInet6Pktinfo))
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = syscall.IPPROTO_IPV6, syscall.IPV6_PKTINFO
		h.SetLen(syscall.CmsgLen(syscall.SizeofInet6Pktinfo))
		pi := (*syscall.Inet6Pktinfo)(unsafe.Pointer(&b[syscall.CmsgLen(0)]))
		pi.Addr = src.As16()
		return b
	}
	b := make([]byte, syscall.CmsgSpace(syscall.SizeofInet4Pktinfo))
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = syscall.IPPROTO_IP, syscall.IP_PKTINFO
	h.SetLen(syscall.CmsgLen(syscall.SizeofInet4Pktinfo))
	pi := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&b[syscall.CmsgLen(0)]))
	pi.Spec_dst = src.Unmap().As4()
	pi.Addr = pi.Spec_dst // ignored by sendmsg; set so the message reads back like a received one
	return b
}
