package dataplane

import "context"

// Backend turns the desired state into kernel state. Backends get their kernel
// handles at construction, keep a cache of what they wrote, and update that cache
// only after a write succeeded.
type Backend interface {
	// Name is the mode's name (ebpf, iptables, ipvs, print).
	Name() string
	// Sync programs state. changes is nil for a full sync, which must make the
	// kernel match state whatever it holds now (repairing drift); otherwise only the
	// frontends in changes differ from the last successful sync. An error makes
	// the next sync a full one.
	Sync(ctx context.Context, state *State, changes *ChangeSet) error
	// Cleanup removes everything the backend ever installed, also what an earlier
	// process left behind.
	Cleanup(ctx context.Context) error
}
