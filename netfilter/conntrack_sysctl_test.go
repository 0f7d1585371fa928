package netfilter

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/test/topology"
)

func TestProcSysctlFiles(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "net/ipv4/conf/all")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "route_localnet"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := ProcSysctl{Root: root}
	if changed, err := EnsureSysctl(s, SysctlRouteLocalnet, "1"); err != nil || !changed {
		t.Fatalf("EnsureSysctl: %v, %v", changed, err)
	}
	if v, err := s.Get("net.ipv4.conf.all.route_localnet"); err != nil || v != "1" {
		t.Errorf("dotted Get = %q, %v", v, err)
	}
	if changed, err := EnsureSysctl(s, SysctlRouteLocalnet, "1"); err != nil || changed {
		t.Errorf("second EnsureSysctl: %v, %v", changed, err)
	}
	if err := s.Set("net/ipv4/conf/all/nonexistent", "1"); err == nil {
		t.Error("Set created a sysctl")
	}
	for _, bad := range []string{"../etc/passwd", "/etc/passwd", ""} {
		if _, err := s.Get(bad); err == nil {
			t.Errorf("Get(%q): no error", bad)
		}
	}
}

func TestFakeSysctl(t *testing.T) {
	f := NewFakeSysctl(map[string]string{SysctlRouteLocalnet: "0"})
	if changed, err := EnsureSysctl(f, SysctlRouteLocalnet, "1"); err != nil || !changed {
		t.Fatalf("EnsureSysctl: %v, %v", changed, err)
	}
	if changed, _ := EnsureSysctl(f, SysctlRouteLocalnet, "1"); changed || f.Writes() != 1 {
		t.Errorf("second EnsureSysctl wrote (changed %v, %d writes)", changed, f.Writes())
	}
	if _, err := EnsureSysctl(f, "net/ipv4/ip_forward", "1"); err == nil {
		t.Error("a sysctl the fake does not have: no error")
	}
}

// The real /proc/sys, from a thread in a node's namespace: the node's value changes, the root
// namespace's does not.
func TestProcSysctlNetns(t *testing.T) {
	support.Require(t)
	topo := support.Build(t, topology.Scenario{Node: topology.Node{Name: "node-a", IPs: []string{"192.168.0.2"}}})
	rootBefore, err := ProcSysctl{}.Get(SysctlRouteLocalnet)
	if err != nil {
		t.Fatal(err)
	}
	var changed bool
	err = topology.OnThreadIn(topo.NodeNS(), func() (err error) {
		changed, err = EnsureSysctl(ProcSysctl{}, SysctlRouteLocalnet, "1")
		return err
	})
	if err != nil || !changed {
		t.Fatalf("EnsureSysctl in the node: %v, %v", changed, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := topo.Run(ctx, topo.NodeNS(), "cat", "/proc/sys/"+SysctlRouteLocalnet)
	if err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("the node's route_localnet is %q (%v), want 1", out, err)
	}
	if rootAfter, err := (ProcSysctl{}).Get(SysctlRouteLocalnet); err != nil || rootAfter != rootBefore {
		t.Errorf("the root namespace's route_localnet went from %q to %q (%v)", rootBefore, rootAfter, err)
	}
}
