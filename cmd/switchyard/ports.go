package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/dataplane"
)

// reservedPortsPath is the sysctl that keeps the kernel from handing out ports of
// the NodePort range as ephemeral ports: a local client bound to such a port would
// collide with a NodePort. procfs is --procfs.
func reservedPortsPath(procfs string) string {
	return filepath.Join(procfs, "sys/net/ipv4/ip_local_reserved_ports")
}

// portSet is the sysctl's content as a bitmap, so merging and removing ranges does
// not depend on how the kernel groups them when it prints them.
type portSet [65536]bool

func parsePortList(s string) (*portSet, error) {
	var ps portSet
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b > 65535 || a > b {
			return nil, fmt.Errorf("unexpected entry %q in the reserved port list", part)
		}
		for p := a; p <= b; p++ {
			ps[p] = true
		}
	}
	return &ps, nil
}

func (ps *portSet) String() string {
	var parts []string
	for p := 0; p < len(ps); p++ {
		if !ps[p] {
			continue
		}
		q := p
		for q+1 < len(ps) && ps[q+1] {
			q++
		}
		if q == p {
			parts = append(parts, strconv.Itoa(p))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", p, q))
		}
		p = q
	}
	return strings.Join(parts, ",")
}

// updateReservedPorts adds (or removes) r to the sysctl at path, keeping whatever
// else is reserved there.
func updateReservedPorts(path string, r dataplane.PortRange, add bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	ps, err := parsePortList(string(data))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for p := r.Base; p <= r.Last(); p++ {
		ps[p] = add
	}
	if err := os.WriteFile(path, []byte(ps.String()+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
