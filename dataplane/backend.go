package dataplane

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Backend turns the desired state into kernel state. Backends get their kernel
// handles at construction, keep a cache of what they wrote, and update that cache
// only after a write succeeded.
type Backend interface {
	// Name is the mode's name (ebpf, iptables, ipvs, print).
	Name() string
	// Sync programs state. changes is nil for a full sync, which must make the
	// kernel match state whatever it holds now (repairing drift); otherwise only the
	// frontends in changes differ from the last successful sync. An error makes
	// the next sync a full one. When ctx is done Sync stops soon (within seconds,
	// whatever the size of the state) with an error wrapping ctx.Err(), leaving
	// the kernel as it was or as the sync had made it, never a frontend (or, for
	// iptables, a table) half written.
	Sync(ctx context.Context, state *State, changes *ChangeSet) error
	// Cleanup removes everything the backend ever installed, also what an earlier
	// process left behind.
	Cleanup(ctx context.Context) error
}

// FrontendErrors is what Sync returns (as is, not wrapped or joined) when it
// programmed everything but these
// frontends, each refused for a reason of its own (a full map, more backends than
// a frontend can hold). The runner reports them on their services and counts the
// sync a success: every other service keeps working, the agent stays healthy, and
// the next full sync tries them again.
type FrontendErrors map[FrontendKey]error

func (e FrontendErrors) Error() string {
	keys := make([]FrontendKey, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	msgs := make([]string, len(keys))
	for i, k := range keys {
		msgs[i] = e[k].Error()
	}
	return fmt.Sprintf("%d frontends not programmed: %s", len(e), strings.Join(msgs, "; "))
}
