package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/switchyard/switchyard/test/loadgen"
)

func probeTCP(o options) result {
	deadline := time.Now().Add(o.timeout)
	d := net.Dialer{Deadline: deadline}
	if o.src.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(o.src)
	}
	c, err := d.Dial("tcp", o.dst.String())
	if err != nil {
		return failure(err)
	}
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return failure(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	r := parseReply(line, err)
	r.Local = c.LocalAddr().String()
	return r
}

func probeUDP(o options) result {
	var laddr *net.UDPAddr
	if o.src.IsValid() {
		laddr = net.UDPAddrFromAddrPort(o.src)
	}
	c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(o.dst))
	if err != nil {
		return failure(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(o.timeout)); err != nil {
		return failure(err)
	}
	if _, err := c.Write([]byte("probe\n")); err != nil {
		return failure(err)
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	r := parseReply(string(buf[:n]), err)
	r.Local = c.LocalAddr().String()
	return r
}

// holdUDP connects a UDP socket, says so, and reports what ends its wait.
func holdUDP(o options, enc *json.Encoder) error {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(o.dst))
	if err != nil {
		return enc.Encode(failure(err))
	}
	defer c.Close()
	if err := enc.Encode(result{Result: "held", Local: c.LocalAddr().String()}); err != nil {
		return err
	}
	n, err := c.Read(make([]byte, 512))
	if err == nil {
		return enc.Encode(result{Result: "error", Error: fmt.Sprintf("an unexpected %d-byte datagram", n)})
	}
	return enc.Encode(failure(err))
}

// parseReply turns the echo server's "<local> <peer>\n" (or the error reading it) into a result.
func parseReply(line string, err error) result {
	// A reply without its newline still counts: the server closed right after writing.
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		if errors.Is(err, io.EOF) {
			return result{Result: "error", Error: "closed without a reply"}
		}
		return failure(err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return result{Result: "error", Error: fmt.Sprintf("malformed reply %q", line)}
	}
	return result{Result: "ok", Endpoint: f[0], Peer: f[1]}
}

// failure classifies an error; see the package doc for the mapping.
func failure(err error) result {
	return result{Result: loadgen.Kind(err), Error: err.Error()}
}
