package bpf

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/switchyard/switchyard/dataplane"
)

// Config is what the eBPF dataplane needs from the agent.
type Config struct {
	// PinDir is where maps and links are pinned (--bpf-root); pins there survive a
	// restart, so connections and programmed state do too.
	PinDir string
	// CgroupPath is the cgroup v2 directory the socket hooks attach to
	// (--cgroup-root): the root on a real node, a sub-cgroup in tests.
	CgroupPath string
	// MaxServices and MaxBackends size the maps (0: the defaults).
	MaxServices, MaxBackends uint32
}

// Backend is the eBPF dataplane (--mode=ebpf): socket-level load balancing for
// traffic that starts on the node.
type Backend struct {
	cfg    Config
	objs   *Objects
	writer *Writer
}

// NewBackend loads the programs, takes over the pinned maps an earlier agent left,
// and attaches the hooks (replacing earlier programs in place, never detaching).
func NewBackend(cfg Config) (*Backend, error) {
	if err := MountBPFFS(bpffsOf(cfg.PinDir)); err != nil {
		return nil, err
	}
	objs, err := Load(LoadOptions{PinDir: cfg.PinDir, MaxServices: cfg.MaxServices, MaxBackends: cfg.MaxBackends})
	if err != nil {
		return nil, err
	}
	if err := objs.Attach(cfg.CgroupPath); err != nil {
		return nil, fmt.Errorf("attaching to cgroup %s: %w (and %v)", cfg.CgroupPath, err, objs.Close())
	}
	return &Backend{
		cfg: cfg, objs: objs,
		writer: NewWriter(NewKernelMap[sockSvcKey, sockSvcVal](objs.Services), NewKernelMap[uint32, sockBackend](objs.Backends)),
	}, nil
}

func (b *Backend) Name() string { return "ebpf" }

func (b *Backend) Sync(_ context.Context, st *dataplane.State, changes *dataplane.ChangeSet) error {
	return b.writer.Sync(st, changes)
}

// Cleanup removes the pins, which detaches the programs and frees the maps.
func (b *Backend) Cleanup(context.Context) error { return Unpin(b.cfg.PinDir) }

// Close releases this process's handles; the pins keep everything in place.
func (b *Backend) Close() error { return b.objs.Close() }

// bpffsOf is the bpffs mount that holds pinDir.
func bpffsOf(pinDir string) string {
	if strings.HasPrefix(filepath.Clean(pinDir)+"/", "/sys/fs/bpf/") {
		return "/sys/fs/bpf"
	}
	return filepath.Dir(filepath.Clean(pinDir))
}
