package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestFailure(t *testing.T) {
	op := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{op(syscall.ECONNREFUSED), "refused"},
		{op(syscall.EHOSTUNREACH), "refused"},
		{op(syscall.ENETUNREACH), "refused"},
		{fmt.Errorf("read: %w", os.ErrDeadlineExceeded), "timeout"},
		{op(syscall.ECONNRESET), "error"},
		{errors.New("odd"), "error"},
	} {
		if r := failure(c.err); r.Result != c.want || r.Error == "" {
			t.Errorf("%v: %+v, want %s", c.err, r, c.want)
		}
	}
}

func TestParseReply(t *testing.T) {
	for _, c := range []struct {
		line string
		err  error
		want result
	}{
		{"10.0.1.1:80 10.0.1.2:4000\n", nil, result{Result: "ok", Endpoint: "10.0.1.1:80", Peer: "10.0.1.2:4000"}},
		{"10.0.1.1:80 10.0.1.2:4000", io.EOF, result{Result: "ok", Endpoint: "10.0.1.1:80", Peer: "10.0.1.2:4000"}},
		{"", io.EOF, result{Result: "error", Error: "closed without a reply"}},
		{"junk\n", nil, result{Result: "error", Error: `malformed reply "junk\n"`}},
	} {
		if got := parseReply(c.line, c.err); got != c.want {
			t.Errorf("%q, %v: %+v, want %+v", c.line, c.err, got, c.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-proto", "udp", "-dst", "[fd00::1]:53", "-src", "fd00::2", "-n", "3"})
	if err != nil || o.proto != "udp" || o.n != 3 || o.dst.Port() != 53 || o.src.Addr().String() != "fd00::2" || o.src.Port() != 0 {
		t.Errorf("%+v, %v", o, err)
	}
	o, err = parseFlags([]string{"-dst", "10.0.0.1:80", "-src", "10.0.0.2:40000"})
	if err != nil || o.src.String() != "10.0.0.2:40000" {
		t.Errorf("-src IP:PORT: %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-dst", "10.0.0.1:1", "-src", "10.0.0.2:x"},
		{"-dst", "10.0.0.1"}, {"-proto", "sctp", "-dst", "10.0.0.1:1"}, {"-dst", "10.0.0.1:1", "-n", "0"},
		{"-dst", "10.0.0.1:1", "-timeout", "0s"}, {"-dst", "10.0.0.1:1", "extra"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
