package bpf

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The kernel matrix (make vm-test) runs these tests on kernels that lack, by
// design, what parts of the eBPF dataplane need. There a missing feature is the
// expected result, not a missing prerequisite: the tests check what the backend
// does instead (clsact instead of TCX; on a kernel too old for the socket
// programs, Probe names the missing helpers so that --mode=auto picks iptables).

// kernelAtLeast reports whether the running kernel is major.minor or newer.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return true // cannot tell: expect everything
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		return true
	}
	return ma > major || ma == major && mi >= minor
}

// tooOldForEBPF: before 5.18 sock_addr programs have no bpf_set_retval (and
// before 5.17 no bpf_loop), which the socket load balancer needs.
func tooOldForEBPF() bool { return !kernelAtLeast(5, 18) }

// onlyOldKernelTests makes a run on a kernel too old for the eBPF dataplane run
// TestOldKernel* only: every other test needs the programs loaded.
func onlyOldKernelTests() {
	if !tooOldForEBPF() {
		return
	}
	flag.Parse()
	fmt.Fprintln(os.Stderr, "this kernel is older than 5.18: running only the tests of the iptables fallback's reason")
	if err := flag.Set("test.run", "^TestOldKernel"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

// On a kernel before 5.18 Probe refuses, naming the helpers the kernel lacks:
// that message is what --mode=auto logs (and exports) when it picks iptables.
func TestOldKernelProbeSaysWhy(t *testing.T) {
	if !tooOldForEBPF() {
		t.Skip("the kernel is 5.18 or newer: TestProbeFeatures checks that Probe passes")
	}
	err := Probe()
	if err == nil {
		t.Fatal("Probe accepts a kernel older than 5.18")
	}
	if !strings.Contains(err.Error(), "bpf_set_retval") {
		t.Errorf("Probe's reason does not name bpf_set_retval: %v", err)
	}
	t.Logf("Probe: %v", err)
}
