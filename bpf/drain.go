package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// lbDraining is tc.c's LB_DRAINING.
const lbDraining = 1

// Drain asks the tc programs pinned in pinDir to start no new flow: from then on a connection
// from outside goes to the stack (to kube-proxy's rules, in a rollback), while the flows the
// programs carry are still translated until they end (LiveFlows). It reports whether anything
// was pinned there. The next agent to load the programs ends the drain.
func Drain(pinDir string) (bool, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, mapLBFlags), nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bpf: drain: %w", err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), uint32(lbDraining)); err != nil {
		return false, fmt.Errorf("bpf: drain: %w", err)
	}
	return true, nil
}

// LiveFlows counts the flows in the connection-tracking maps pinned in pinDir that are neither
// over nor closed: the connections from outside that only these programs still translate.
func LiveFlows(pinDir string) (int, error) {
	now := monotonicNow()
	n := 0
	for _, name := range []string{mapCTAssured, mapCTLRU} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("bpf: %s: %w", name, err)
		}
		var k tcCtKey
		var v tcCtVal
		it := m.Iterate()
		for it.Next(&k, &v) {
			if live(v, now) {
				n++
			}
		}
		err = it.Err()
		m.Close()
		if err != nil {
			return 0, fmt.Errorf("bpf: %s: %w", name, err)
		}
	}
	return n, nil
}

// live: a flow's forward entry, not expired, not closed or reset.
func live(v tcCtVal, now uint64) bool {
	return v.IsReply == 0 && !dead(v, now) && v.Closed == 0 && v.Rst == 0
}
