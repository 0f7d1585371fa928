package topology

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestPlanRejects(t *testing.T) {
	for name, mutate := range map[string]func(*Scenario){
		"bad prefix":          func(s *Scenario) { s.Prefix = "xx1234" },
		"long prefix":         func(s *Scenario) { s.Prefix = "sy1234567" },
		"non-hex prefix":      func(s *Scenario) { s.Prefix = "sytest" },
		"no node IP":          func(s *Scenario) { s.Node.IPs = nil },
		"bad node IP":         func(s *Scenario) { s.Node.IPs = []string{"192.168.0"} },
		"pod IP twice":        func(s *Scenario) { s.Pods[1].IP = s.Pods[0].IP },
		"pod IP is a node IP": func(s *Scenario) { s.Pods[0].IP = "192.168.0.3" },
		"pod name twice":      func(s *Scenario) { s.Pods[1].Name = s.Pods[0].Name },
		"pod name invalid":    func(s *Scenario) { s.Pods[0].Name = "A_b" },
		"bad protocol":        func(s *Scenario) { s.Pods[0].Ports = []Port{{"SCTP", 80}} },
		"bad port":            func(s *Scenario) { s.Pods[0].Ports = []Port{{"TCP", 0}} },
		"IPv6 field not v6":   func(s *Scenario) { s.Pods[0].IPv6 = "10.9.9.9" },
		"remote lacks family": func(s *Scenario) { s.RemoteNode.IPs = []string{"192.168.0.3"} },
		"no remote node":      func(s *Scenario) { s.RemoteNode.IPs = nil },
		"client family":       func(s *Scenario) { s.Node.IPs = []string{"192.168.0.2"}; s.RemoteNode.IPs = nil; s.Pods = nil },
		"no echo binary":      func(s *Scenario) { s.EchoBin = "" },
		"rp_filter":           func(s *Scenario) { s.RPFilter = 3 },
	} {
		s := standardScenario(0)
		s.Prefix, s.EchoBin = "sy000000", "/echo"
		mutate(&s)
		if _, err := newPlan(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	s := standardScenario(0)
	s.Prefix, s.EchoBin = "sy000000", "/echo"
	if _, err := newPlan(s); err != nil {
		t.Errorf("standard scenario: %v", err)
	}
}

func TestGateways(t *testing.T) {
	node := []netip.Prefix{
		netip.MustParsePrefix("192.168.0.2/24"), netip.MustParsePrefix("192.168.1.2/24"),
		netip.MustParsePrefix("2001:db8::1/64"),
	}
	used := []netip.Addr{netip.MustParseAddr("192.168.0.254")}
	got := gatewaysFor(node, used)
	want := []netip.Prefix{netip.MustParsePrefix("192.168.0.253/24"), netip.MustParsePrefix("2001:db8::ffff:ffff:ffff:fffe/64")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("gateways %v, want %v", got, want)
	}
	if g := gatewaysFor([]netip.Prefix{netip.MustParsePrefix("10.0.0.1/31")}, nil); len(g) != 0 {
		t.Errorf("a /31 has no room for a gateway, got %v", g)
	}
}

func TestCheckPeers(t *testing.T) {
	id := func(i int) *int { return &i }
	links := []ipLink{{Name: "lo"}, {Name: "syaaan", NetnsID: id(0)}, {Name: "syaaap0", NetnsID: id(1)}}
	ours := map[string]bool{"syaaa-lan": true, "syaaa-pod-x": true}
	good := []nsID{{0, "syaaa-lan"}, {1, "syaaa-pod-x"}}
	if err := checkPeers("syaaa-node", links, good, ours); err != nil {
		t.Errorf("all peers ours: %v", err)
	}
	// An id without a name is an unnamed namespace: the root one, typically.
	if err := checkPeers("syaaa-node", links, good[:1], ours); err == nil || !strings.Contains(err.Error(), "syaaap0") {
		t.Errorf("peer in an unnamed namespace: %v", err)
	}
	if err := checkPeers("syaaa-node", links, []nsID{{0, "syaaa-lan"}, {1, "other"}}, ours); err == nil {
		t.Error("peer in a foreign namespace passed")
	}
}

func TestCheckRootLinks(t *testing.T) {
	before := []string{"eth0", "lo"}
	if err := checkRootLinks("syaaa", before, before); err != nil {
		t.Error(err)
	}
	if err := checkRootLinks("syaaa", before, []string{"eth0", "lo", "syaaan"}); err == nil {
		t.Error("a link with our prefix in the root namespace passed")
	}
	if err := checkRootLinks("syaaa", before, []string{"eth0", "lo", "veth1"}); err == nil {
		t.Error("a new root link passed")
	}
}

func TestParseProbe(t *testing.T) {
	out := `{"result":"ok","endpoint":"10.0.1.1:80","peer":"10.0.1.2:4000","local":"10.0.1.2:4000"}
{"result":"timeout","error":"i/o timeout"}
`
	rs, err := parseProbe(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []ProbeResult{
		{Result: "ok", Endpoint: "10.0.1.1:80", Peer: "10.0.1.2:4000", Local: "10.0.1.2:4000"},
		{Result: "timeout", Error: "i/o timeout"},
	}
	if !reflect.DeepEqual(rs, want) {
		t.Errorf("got %+v", rs)
	}
	if _, err := parseProbe("not json\n"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestEchoArgs(t *testing.T) {
	got := echoArgs([]Port{{"TCP", 80}, {ProtocolTCPCloseAfterReply, 9191}, {"UDP", 53}, {"TCP", 8080},
		{ProtocolTCPRequestReply, 9090}})
	want := []string{"-tcp", "80,8080", "-udp", "53", "-tcp-rr", "9090", "-tcp-close", "9191"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
}

func TestMarker(t *testing.T) {
	p, err := NewPrefix()
	if err != nil {
		t.Fatal(err)
	}
	if !prefixRE.MatchString(p) || !markerRE.MatchString(p+"-node") || markerRE.MatchString("system-x") || markerRE.MatchString("sy12345-x") {
		t.Errorf("prefix %s or marker broken", p)
	}
	if n := len(p + ifClientLan + "99"); n > 15 {
		t.Errorf("interface name of %d bytes", n)
	}
}

// iproute2 reports a namespace it could not look up (another run deleting one at that moment) on
// stderr and still exits 0 with its whole answer on stdout: that answer must be read as it is.
func TestIPJSONReadsStdoutOnly(t *testing.T) {
	fakeIP(t, `echo 'Error: Peer netns reference is invalid.' >&2; echo '[{"nsid":0,"name":"syaaaaaa-lan"}]'`)
	var ids []nsID
	if err := ipJSON(context.Background(), &ids, "-n", "syaaaaaa-node", "netns", "list-id"); err != nil {
		t.Fatal(err)
	}
	if want := []nsID{{0, "syaaaaaa-lan"}}; !reflect.DeepEqual(ids, want) {
		t.Errorf("got %+v, want %+v", ids, want)
	}
	fakeIP(t, `echo 'Cannot open network namespace "syaaaaaa-node"' >&2; exit 1`)
	err := ipJSON(context.Background(), &ids, "-n", "syaaaaaa-node", "netns", "list-id")
	if err == nil || !strings.Contains(err.Error(), "Cannot open network namespace") {
		t.Errorf("a failed ip: %v, want its stderr in the error", err)
	}
	fakeIP(t, `echo 'Warning: something' >&2; echo 'not json'`)
	err = ipJSON(context.Background(), &ids, "netns", "list-id")
	if err == nil || !strings.Contains(err.Error(), "Warning: something") {
		t.Errorf("garbage on stdout: %v, want an error with ip's stderr", err)
	}
}

// fakeIP puts an `ip` that runs script first in PATH for the rest of the test.
func fakeIP(t *testing.T, script string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ip"), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}
