// Command echo is the server every test pod runs. It tells each client which address it reached and
// which address it came from, so tests can see load balancing and NAT:
//
//	echo -tcp 80,8080 -udp 53
//
// Per TCP connection it writes one line "<local ip:port> <peer ip:port>\n" and closes; per UDP
// datagram it sends that line back to the sender, from the address the datagram was sent to. It
// listens on all addresses (dual-stack) and prints "ready" once every socket is open.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

func main() {
	tcp := flag.String("tcp", "", "comma-separated TCP ports")
	udp := flag.String("udp", "", "comma-separated UDP ports")
	flag.Parse()
	tcpPorts, err := parsePorts(*tcp)
	if err == nil && len(tcpPorts) == 0 && *udp == "" {
		err = fmt.Errorf("no port given")
	}
	udpPorts, uerr := parsePorts(*udp)
	if err != nil || uerr != nil || flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "usage: echo -tcp PORT,... -udp PORT,... (%v %v)\n", err, uerr)
		os.Exit(2)
	}
	if err := serve(tcpPorts, udpPorts); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func parsePorts(s string) ([]int, error) {
	var ports []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("bad port %q", f)
		}
		ports = append(ports, p)
	}
	return ports, nil
}

// serve opens every socket first, so "ready" means all of them accept traffic, then serves forever.
func serve(tcpPorts, udpPorts []int) error {
	errs := make(chan error, len(tcpPorts)+len(udpPorts))
	var starts []func()
	for _, p := range tcpPorts {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			return err
		}
		starts = append(starts, func() { errs <- serveTCP(ln) })
	}
	for _, p := range udpPorts {
		c, err := listenUDP(p)
		if err != nil {
			return err
		}
		starts = append(starts, func() { errs <- serveUDP(c) })
	}
	for _, start := range starts {
		go start()
	}
	fmt.Println("ready")
	return <-errs
}

func serveTCP(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go func() {
			defer c.Close()
			// A client that went away is its own business; nothing to report.
			_, _ = fmt.Fprintf(c, "%s %s\n", addrString(c.LocalAddr()), addrString(c.RemoteAddr()))
		}()
	}
}

// addrString prints IPv4-mapped addresses of the dual-stack sockets as plain IPv4.
func addrString(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}
