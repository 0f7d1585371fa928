package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"

	"github.com/switchyard/switchyard/dataplane"
)

// ebpfRequirement is a kernel feature the eBPF dataplane cannot work without.
type ebpfRequirement struct {
	name  string
	probe func() error
}

var ebpfRequirements = []ebpfRequirement{
	{"cgroup sock_addr programs (socket-level load balancing)", func() error { return features.HaveProgramType(ebpf.CGroupSockAddr) }},
	{"tc (SchedCLS) programs", func() error { return features.HaveProgramType(ebpf.SchedCLS) }},
	{"LRU hash maps", func() error { return features.HaveMapType(ebpf.LRUHash) }},
	{"LPM trie maps", func() error { return features.HaveMapType(ebpf.LPMTrie) }},
	{"bpf_get_netns_cookie in cgroup sock_addr programs", func() error {
		return features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnGetNetnsCookie)
	}},
}

// missingEBPF lists the requirements this kernel lacks (an empty list: eBPF works).
func missingEBPF(reqs []ebpfRequirement) []string {
	var missing []string
	for _, r := range reqs {
		if err := r.probe(); err != nil {
			missing = append(missing, fmt.Sprintf("%s (%v)", r.name, err))
		}
	}
	return missing
}

// resolveMode turns auto into a concrete mode, saying why on log.
func resolveMode(mode string, reqs []ebpfRequirement, log io.Writer) string {
	if mode != "auto" {
		return mode
	}
	if missing := missingEBPF(reqs); len(missing) > 0 {
		fmt.Fprintf(log, "mode auto: eBPF is not usable, falling back to iptables; missing: %s\n", strings.Join(missing, "; "))
		return "iptables"
	}
	fmt.Fprintln(log, "mode auto: the kernel supports everything the eBPF dataplane needs; using ebpf")
	return "ebpf"
}

// newBackend builds the backend of a concrete mode.
func newBackend(mode string, out io.Writer) (dataplane.Backend, error) {
	switch mode {
	case "print":
		return dataplane.NewPrintBackend(out), nil
	}
	return nil, usageError{fmt.Errorf("--mode: the %s dataplane is not built yet; this release has: %s", mode, strings.Join(builtList(), ", "))}
}

func builtList() []string {
	var out []string
	for _, m := range knownModes {
		if builtModes[m] {
			out = append(out, m)
		}
	}
	return out
}

// allBackendsForCleanup returns every backend that can have left state behind.
func allBackendsForCleanup(out io.Writer) ([]dataplane.Backend, error) {
	var bs []dataplane.Backend
	var errs []error
	for _, m := range knownModes {
		if !builtModes[m] {
			continue
		}
		b, err := newBackend(m, out)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		bs = append(bs, b)
	}
	return bs, errors.Join(errs...)
}
