package main

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestParsePorts(t *testing.T) {
	got, err := parsePorts("80, 8080,,53")
	if err != nil || !reflect.DeepEqual(got, []int{80, 8080, 53}) {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"0", "65536", "http", "80,-1"} {
		if _, err := parsePorts(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestPktinfoRoundTrip: the control message built for a reply parses back to the same address, for
// the dual-stack socket (IPv4-mapped and IPv6) and the IPv4-only one.
func TestPktinfoRoundTrip(t *testing.T) {
	for _, c := range []struct {
		v6   bool
		addr string
	}{{true, "::ffff:10.0.1.1"}, {true, "fd00:1::1"}, {false, "10.0.1.1"}} {
		a := netip.MustParseAddr(c.addr)
		got, ok := pktinfoDst(srcCmsg(c.v6, a))
		if !ok || got != a {
			t.Errorf("%s: got %s %v", c.addr, got, ok)
		}
	}
	if _, ok := pktinfoDst(nil); ok {
		t.Error("no control message parsed as an address")
	}
}

// The request/reply mode answers every request line with one line, and ends when the client closes.
func TestAnswer(t *testing.T) {
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() { answer(server); server.Close(); close(done) }()
	r := bufio.NewReader(client)
	for range 3 {
		if _, err := client.Write([]byte("request\n")); err != nil {
			t.Fatal(err)
		}
		// net.Pipe's addresses are "pipe", printed as they are.
		if line, err := r.ReadString('\n'); err != nil || line != "pipe pipe\n" {
			t.Fatalf("reply %q, %v", line, err)
		}
	}
	client.Close()
	<-done
}

// The close-after-reply mode answers the first request line, then the server closes: the client
// reads the reply and then EOF, without closing first.
func TestAnswerOnce(t *testing.T) {
	client, server := net.Pipe()
	go func() { answerOnce(server); server.Close() }()
	defer client.Close()
	// A server that kept the connection open would leave the second read waiting.
	if err := client.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("request\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(client)
	if line, err := r.ReadString('\n'); err != nil || line != "pipe pipe\n" {
		t.Fatalf("reply %q, %v", line, err)
	}
	if rest, err := r.ReadString('\n'); err != io.EOF {
		t.Errorf("after the reply: %q, %v; want the server's close", rest, err)
	}
}
