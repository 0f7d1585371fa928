// Command echo is the server every test pod runs. It tells each client which address it reached and
// which address it came from, so tests can see load balancing and NAT:
//
//	echo -tcp 80,8080 -udp 53 -tcp-rr 9090
//
// Per TCP connection it writes one line "<local ip:port> <peer ip:port>\n" and closes; per UDP
// datagram it sends that line back to the sender, from the address the datagram was sent to. On the
// -tcp-rr ports (request/reply, for load generators such as test/cmd/loadgen) it writes nothing
// first: it answers every line the client sends with that same line "<local> <peer>\n", and closes
// when the client does. It listens on all addresses (dual-stack) and prints "ready" once every socket
// is open.
package main

import (
	"bufio"
	"errors"
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
	rr := flag.String("tcp-rr", "", "comma-separated TCP ports answering every request line (persistent connections)")
	flag.Parse()
	tcpPorts, err := parsePorts(*tcp)
	if err == nil && len(tcpPorts) == 0 && *udp == "" && *rr == "" {
		err = fmt.Errorf("no port given")
	}
	udpPorts, uerr := parsePorts(*udp)
	rrPorts, rerr := parsePorts(*rr)
	if err != nil || uerr != nil || rerr != nil || flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "usage: echo -tcp PORT,... -udp PORT,... -tcp-rr PORT,... (%v)\n", errors.Join(err, uerr, rerr))
		os.Exit(2)
	}
	if err := serve(tcpPorts, udpPorts, rrPorts); err != nil {
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
func serve(tcpPorts, udpPorts, rrPorts []int) error {
	errs := make(chan error, len(tcpPorts)+len(udpPorts)+len(rrPorts))
	var starts []func()
	for i, p := range append(append([]int{}, tcpPorts...), rrPorts...) {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			return err
		}
		handle := greet
		if i >= len(tcpPorts) {
			handle = answer
		}
		starts = append(starts, func() { errs <- serveTCP(ln, handle) })
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

func serveTCP(ln net.Listener, handle func(net.Conn)) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// greet writes the line and returns (the connection is then closed).
func greet(c net.Conn) {
	// A client that went away is its own business; nothing to report.
	_, _ = fmt.Fprintf(c, "%s %s\n", addrString(c.LocalAddr()), addrString(c.RemoteAddr()))
}

// answer writes the line once per request line until the client closes or fails.
func answer(c net.Conn) {
	reply := []byte(fmt.Sprintf("%s %s\n", addrString(c.LocalAddr()), addrString(c.RemoteAddr())))
	r := bufio.NewReader(c)
	for {
		if _, err := r.ReadSlice('\n'); err != nil {
			return // EOF, a reset, or a request line longer than the buffer: the conversation is over
		}
		if _, err := c.Write(reply); err != nil {
			return
		}
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
