package iptables

import (
	"os"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/netfilter"
	"github.com/switchyard/switchyard/test/topology"
)

// The kernel tests of this package run inside the namespaces of a simulated node
// built by the topology package; the root namespace is never touched.

// support is set by TestMain: the topology helpers, or why the kernel tests cannot run here.
var support *topology.Support

func TestMain(m *testing.M) {
	support = topology.PrepareTests("root, ip, nsenter and cgroup v2", nil)
	os.Exit(support.Run(m))
}

// jumpRule is the jump as a restore line, quoted as the rules are (as
// netfilter.FakeJumper writes it).
func jumpRule(j netfilter.Jump) string {
	parts := append([]string{"-A", j.Chain}, j.Args...)
	if j.Comment != "" {
		parts = append(parts, netfilter.Comment(j.Comment)...)
	}
	return strings.Join(append(parts, "-j", j.Target), " ")
}
