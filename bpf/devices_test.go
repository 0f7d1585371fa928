package bpf

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func TestListDevices(t *testing.T) {
	e := newTCEnv(t)
	p := e.topo.Prefix()
	va, vb := p+"va", p+"vb"
	e.addVeth(t, va, vb)
	e.ip(t, "addr", "add", "10.250.0.1/24", "dev", va)
	uplink, pod := e.topo.NodeUplink(), e.topo.PodHostIface(tcPod)
	all := []string{uplink, pod, va, vb} // sorted: the prefix, then n, p0, va, vb

	for _, c := range []struct {
		name     string
		explicit []string
		nodeIPs  []netip.Addr
		external []string
	}{
		{"by node IP on a veth", nil, []netip.Addr{netip.MustParseAddr("10.250.0.1")}, []string{va}},
		{"by node IP, IPv4-mapped", nil, []netip.Addr{netip.MustParseAddr("::ffff:10.250.0.1")}, []string{va}},
		{"by node IP on the uplink", nil, []netip.Addr{netip.MustParseAddr(tcNodeIP), netip.MustParseAddr("2001:db8::9")}, []string{uplink}},
		{"no node IP", nil, nil, nil},
		{"explicit names win over node IPs", []string{pod}, []netip.Addr{netip.MustParseAddr(tcNodeIP)}, []string{pod}},
		{"explicit pattern", []string{p + "v*"}, nil, []string{va, vb}},
	} {
		var devs []Device
		e.do(t, c.name, func() (err error) { devs, err = ListDevices(c.explicit, c.nodeIPs); return err })
		var names, external []string
		for _, d := range devs {
			names = append(names, d.Name)
			if d.External {
				external = append(external, d.Name)
			}
		}
		if !slices.Equal(names, all) || !slices.Equal(external, c.external) {
			t.Errorf("%s: devices %v, external %v; want %v, external %v", c.name, names, external, all, c.external)
		}
		e.do(t, "indexes", func() error { return checkIndexes(t, devs) })
	}

	for _, bad := range [][]string{{p + "nomatch*"}, {va, "lo"}, {"["}} {
		if err := e.inNode(func() error { _, err := ListDevices(bad, nil); return err }); err == nil {
			t.Errorf("ListDevices(%q) succeeded, want an error", bad)
		}
	}
}

func checkIndexes(t *testing.T, devs []Device) error {
	for _, d := range devs {
		nl, err := netlink.LinkByName(d.Name)
		if err != nil {
			return err
		}
		if nl.Attrs().Index != d.Index {
			t.Errorf("%s: index %d, want %d", d.Name, d.Index, nl.Attrs().Index)
		}
	}
	return nil
}

// notifications records WatchLinks's calls.
type notifications struct {
	mu    sync.Mutex
	calls int
}

func (n *notifications) notify() {
	n.mu.Lock()
	n.calls++
	n.mu.Unlock()
}

func (n *notifications) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls
}

// quiet waits until no call came for quietFor: a fresh namespace still sees addresses settle.
func (n *notifications) quiet(t *testing.T, quietFor time.Duration) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for last := n.count(); time.Now().Before(deadline); {
		time.Sleep(quietFor)
		now := n.count()
		if now == last {
			return
		}
		last = now
	}
	t.Fatal("WatchLinks keeps notifying in a namespace where nothing changes")
}

// callsDuring returns how many calls came within wait after change.
func (n *notifications) callsDuring(t *testing.T, wait time.Duration, change func()) int {
	t.Helper()
	before := n.count()
	change()
	time.Sleep(wait)
	return n.count() - before
}

func TestWatchLinks(t *testing.T) {
	e := newTCEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := &notifications{}
	e.do(t, "WatchLinks", func() error { return WatchLinks(ctx, n.notify) })
	n.quiet(t, 500*time.Millisecond)
	p := e.topo.Prefix()
	podNS := e.topo.PodNS(tcPod)

	// Another namespace's changes are not ours.
	got := n.callsDuring(t, 500*time.Millisecond, func() {
		if _, err := e.topo.Run(ctx, podNS, "ip", "link", "add", "x0", "type", "veth", "peer", "name", "x1"); err != nil {
			t.Fatal(err)
		}
	})
	if got != 0 {
		t.Errorf("%d calls for a link added in another namespace, want 0", got)
	}

	got = n.callsDuring(t, time.Second, func() { e.addVeth(t, p+"wa", p+"wb") })
	if got != 1 {
		t.Errorf("%d calls for one veth pair added, want 1", got)
	}
	got = n.callsDuring(t, time.Second, func() { e.ip(t, "addr", "add", "10.251.0.1/24", "dev", p+"wa") })
	if got != 1 {
		t.Errorf("%d calls for an address added, want 1", got)
	}

	// A burst (10 links and 5 addresses from one ip -batch) is coalesced: at most one call per
	// coalescing window it spans, plus the one that straddles its end. On an idle machine that is
	// one or two calls; a loaded one stretches the burst, which the bound follows.
	var span time.Duration
	got = n.callsDuring(t, time.Second, func() {
		var batch strings.Builder
		for i := 1; i <= 5; i++ {
			fmt.Fprintf(&batch, "link add %sb%d type veth peer name %sc%d\naddr add 10.252.%d.1/24 dev %sb%d\n", p, i, p, i, i, p, i)
		}
		start := time.Now()
		cmd := e.topo.Command(e.topo.NodeNS(), "ip", "-batch", "-")
		cmd.Stdin = strings.NewReader(batch.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ip -batch: %v: %s", err, out)
		}
		span = time.Since(start)
	})
	if limit := 2 + int(span/linkWatchCoalesce); got < 1 || got > limit {
		t.Errorf("%d calls for a burst of 15 changes over %s, want 1 to %d", got, span, limit)
	}

	got = n.callsDuring(t, time.Second, func() { e.ip(t, "link", "del", p+"wa") })
	if got != 1 {
		t.Errorf("%d calls for a veth pair deleted, want 1", got)
	}

	cancel()
	time.Sleep(200 * time.Millisecond)
	got = n.callsDuring(t, 500*time.Millisecond, func() { e.addVeth(t, p+"za", p+"zb") })
	if got != 0 {
		t.Errorf("%d calls after the context ended, want 0", got)
	}
}
