// Command echo is the server every test pod runs. It tells each client which address it reached and
// which address it came from, so tests can see load balancing and NAT:
//
//	echo -tcp 80,8080 -udp 53 -tcp-rr 9090 -tcp-close 9191
//
// Per TCP connection it writes one line "<local ip:port> <peer ip:port>\n" and closes; per UDP
// datagram it sends that line back to the sender, from the address the datagram was sent to. On the
// -tcp-rr ports (request/reply, for load generators such as test/cmd/loadgen) it writes nothing
// first: it answers every line the client sends with that same line "<local> <peer>\n", and closes
// when the client does. On the -tcp-close ports it answers the first line the same way and then
// closes the connection itself: the server closes first, so its side, not the client's, goes
// through TIME_WAIT. It listens on all addresses (dual-stack) and prints "ready" once every socket
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
	"syscall"
)

func main() {
	tcp := flag.String("tcp", "", "comma-separated TCP ports")
	udp := flag.String("udp", "", "comma-separated UDP ports")
	rr := flag.String("tcp-rr", "", "comma-separated TCP ports answering every request line (persistent connections)")
	closing := flag.String("tcp-close", "", "comma-separated TCP ports answering one request line, then closing")
	flag.Parse()
	tcpPorts, err := parsePorts(*tcp)
	if err == nil && len(tcpPorts) == 0 && *udp == "" && *rr == "" && *closing == "" {
		err = fmt.Errorf("no port given")
	}
	udpPorts, uerr := parsePorts(*udp)
	rrPorts, rerr := parsePorts(*rr)
	closePorts, cerr := parsePorts(*closing)
	if err != nil || uerr != nil || rerr != nil || cerr != nil || flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "usage: echo -tcp PORT,... -udp PORT,... -tcp-rr PORT,... -tcp-close PORT,... (%v)\n",
			errors.Join(err, uerr, rerr, cerr))
		os.Exit(2)
	}
	tcpModes := []tcpMode{{tcpPorts, greet}, {rrPorts, answer}, {closePorts, answerOnce}}
	if err := serve(tcpModes, udpPorts); err != nil {
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

// tcpMode is what a connection to one of ports gets.
type tcpMode struct {
	ports  []int
	handle func(net.Conn)
}

// serve opens every socket first, so "ready" means all of them accept traffic, then serves forever.
func serve(tcpModes []tcpMode, udpPorts []int) error {
	n := len(udpPorts)
	for _, m := range tcpModes {
		n += len(m.ports)
	}
	errs := make(chan error, n)
	var starts []func()
	for _, m := range tcpModes {
		for _, p := range m.ports {
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
			if err != nil {
				return err
			}
			starts = append(starts, func() { errs <- serveTCP(ln, m.handle) })
		}
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
func answer(c net.Conn) { answerLines(c, false) }

// answerOnce answers one request line and returns, so the server closes first. The request is read
// before the close: unread data would turn the close into a reset, which leaves no TIME_WAIT. The
// reply is corked, so it leaves with the FIN: a client that closes once it has the reply cannot
// close before the server (both would be first then, and the server's side would not hold TIME_WAIT).
func answerOnce(c net.Conn) {
	cork(c)
	answerLines(c, true)
}

// cork sets TCP_CORK on a TCP connection: what is written waits for more, or for the close. Without
// it (net.Pipe in tests, a failed setsockopt) the reply still goes, on its own.
func cork(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1) })
}

func answerLines(c net.Conn, once bool) {
	reply := []byte(fmt.Sprintf("%s %s\n", addrString(c.LocalAddr()), addrString(c.RemoteAddr())))
	r := bufio.NewReader(c)
	for {
		if _, err := r.ReadSlice('\n'); err != nil {
			return // EOF, a reset, or a request line longer than the buffer: the conversation is over
		}
		if _, err := c.Write(reply); err != nil || once {
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
