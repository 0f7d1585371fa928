package bpf

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// ctTable is what the collector needs of ct_assured.
type ctTable interface {
	Each(func(tcCtKey, tcCtVal) bool) error
	Get(tcCtKey) (tcCtVal, bool, error)
	Delete(tcCtKey) error
}

// ctGC deletes the entries of ct_assured whose flow is over. The kernel never
// evicts from that map (established connections must outlive any churn), so
// flows that end without a close (UDP streams, a TCP peer that vanished) stay
// there until they expire, and this is what removes them then.
type ctGC struct {
	ct ctTable
	// now is bpf_ktime_get_ns()'s clock: CLOCK_MONOTONIC, in nanoseconds.
	now func() uint64
	// suspects are reply entries found without their flow in the last pass: one
	// is deleted only if the next pass finds it so again, since the programs
	// write a flow's two entries one after the other.
	suspects map[tcCtKey]bool
	entries  atomic.Int64 // seen in the last pass
}

func newCTGC(ct ctTable) *ctGC {
	return &ctGC{ct: ct, now: monotonicNow, suspects: map[tcCtKey]bool{}}
}

func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail with this clock
	return uint64(ts.Nano())
}

// dead: an entry's expiry passed. Written by the programs only while alive, so
// a dead entry stays dead.
func dead(v tcCtVal, now uint64) bool { return int64(v.Expires-now) <= 0 }

// turned is the key of the other direction of an entry (tc.c's turn).
func turned(v tcCtVal, proto uint8) tcCtKey {
	return tcCtKey{Saddr: v.Daddr, Daddr: v.Saddr, Sport: v.Dport, Dport: v.Sport, Proto: proto}
}

// collect makes one pass: it returns how many entries it deleted.
func (g *ctGC) collect() (int, error) {
	now := g.now()
	var doomed []tcCtKey
	deadFlows := map[tcCtKey]bool{}
	replies := map[tcCtKey]tcCtVal{}
	var n int64
	err := g.ct.Each(func(k tcCtKey, v tcCtVal) bool {
		n++
		switch {
		case v.IsReply == 0 && dead(v, now):
			doomed = append(doomed, k)
			deadFlows[k] = true
		case v.IsReply != 0 && v.Expires != 0:
			if dead(v, now) { // a reopened flow's hold on its old port
				doomed = append(doomed, k)
			}
		case v.IsReply != 0:
			replies[k] = v
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	g.entries.Store(n)
	suspects := map[tcCtKey]bool{}
	for rk, r := range replies {
		switch g.flowState(rk, r, deadFlows, now) {
		case flowOver:
			doomed = append(doomed, rk)
		case flowMissing:
			if g.suspects[rk] {
				doomed = append(doomed, rk)
			} else {
				suspects[rk] = true
			}
		}
	}
	g.suspects = suspects
	deleted := 0
	for _, k := range doomed {
		if err := g.ct.Delete(k); err != nil {
			return deleted, err
		}
		deleted++
	}
	return deleted, nil
}

const (
	flowLive    = iota
	flowOver    // expired: it stays so, its reply entry can go now
	flowMissing // absent or not owning the port: perhaps half-written, so only on a second look
)

// flowState is what became of the flow that reply entry r (key rk) belongs to.
func (g *ctGC) flowState(rk tcCtKey, r tcCtVal, deadFlows map[tcCtKey]bool, now uint64) int {
	fk := turned(r, rk.Proto)
	if deadFlows[fk] {
		return flowOver
	}
	f, ok, err := g.ct.Get(fk)
	switch {
	case err != nil:
		return flowLive // unreadable: nothing to decide
	case !ok || f.IsReply != 0 || turned(f, rk.Proto) != rk:
		return flowMissing
	case dead(f, now):
		return flowOver
	}
	return flowLive
}

// run collects every interval until ctx ends.
func (g *ctGC) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := g.collect(); err != nil {
				klog.ErrorS(err, "Collecting expired connections", "map", mapCTAssured)
			} else if n > 0 {
				klog.V(4).InfoS("Collected expired connections", "map", mapCTAssured, "entries", n)
			}
		}
	}
}
