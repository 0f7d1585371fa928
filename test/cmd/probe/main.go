// Command probe is the test client. It runs inside a namespace (as a subprocess: never from the test
// process) and opens new connections to an echo server:
//
//	probe -proto tcp|udp -dst IP:PORT [-src IP[:PORT]] [-timeout 1s] [-n N]
//	probe -hold -dst IP:PORT
//
// Each connection gets a fresh socket (a new source port, so a new conntrack entry, unless -src
// names the port) and prints one JSON line:
//
//	{"result":"ok","endpoint":"10.0.1.1:80","peer":"10.0.1.2:40000","local":"10.0.1.2:40000"}
//
// endpoint is the server's local address and peer the client address the server saw (both from the
// echo server's reply); local is the probe's own socket address, so peer != local reveals SNAT.
//
// Results, by what the kernel reports:
//
//	ok       a reply line arrived
//	refused  ECONNREFUSED (TCP RST to the SYN, or ICMP port unreachable for UDP), and also
//	         EHOSTUNREACH / ENETUNREACH (ICMP host/net unreachable, or no route): "error" then names
//	         which one
//	timeout  no answer within -timeout (SYN unanswered, datagram unanswered, or no reply line)
//	error    anything else (e.g. a reset after the connection was established, a malformed reply)
//
// With -hold it connects one UDP socket, prints {"result":"held","local":...}, sends nothing and waits
// for whatever ends the wait (the socket being destroyed, say), which it prints as a last line.
//
// The exit status is 0 whatever the results; 2 means bad usage.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"
)

// result is one output line; the field names are the test harness's contract.
type result struct {
	Result   string `json:"result"`
	Endpoint string `json:"endpoint,omitempty"`
	Peer     string `json:"peer,omitempty"`
	Local    string `json:"local,omitempty"`
	Error    string `json:"error,omitempty"`
}

type options struct {
	proto   string
	dst     netip.AddrPort
	src     netip.AddrPort // port 0: the kernel picks one
	timeout time.Duration
	n       int
	hold    bool
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage: probe -proto tcp|udp -dst IP:PORT [-src IP[:PORT]] [-timeout 1s] [-n N]:", err)
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	if o.hold {
		if err := holdUDP(o, enc); err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
		return
	}
	for i := 0; i < o.n; i++ {
		var r result
		if o.proto == "tcp" {
			r = probeTCP(o)
		} else {
			r = probeUDP(o)
		}
		if err := enc.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, "probe: write:", err)
			os.Exit(1)
		}
	}
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	proto := fs.String("proto", "tcp", "tcp or udp")
	dst := fs.String("dst", "", "destination IP:PORT")
	src := fs.String("src", "", "source IP, or IP:PORT, to bind (optional)")
	timeout := fs.Duration("timeout", time.Second, "per-connection timeout")
	n := fs.Int("n", 1, "number of sequential new connections")
	hold := fs.Bool("hold", false, "hold one connected UDP socket until something ends it")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	o := options{proto: *proto, timeout: *timeout, n: *n, hold: *hold}
	var err error
	if o.dst, err = netip.ParseAddrPort(*dst); err != nil {
		return o, fmt.Errorf("-dst: %w", err)
	}
	if *src != "" {
		if o.src, err = netip.ParseAddrPort(*src); err != nil {
			a, aerr := netip.ParseAddr(*src)
			if aerr != nil {
				return o, fmt.Errorf("-src: want IP or IP:PORT: %w", err)
			}
			o.src = netip.AddrPortFrom(a, 0)
		}
	}
	if o.proto != "tcp" && o.proto != "udp" || o.timeout <= 0 || o.n < 1 || fs.NArg() > 0 {
		return o, fmt.Errorf("bad -proto, -timeout, -n or extra arguments")
	}
	return o, nil
}
