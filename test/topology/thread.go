package topology

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// OnThreadIn runs fn on an OS thread switched into the named namespace, after
// checking that it is there: for tests that call the kernel from Go (netlink,
// TCX, BPF_PROG_TEST_RUN) or exec from that thread. The thread is never unlocked:
// it ends with its goroutine, so nothing else ever runs in the namespace by
// accident. fn must not call t.Fatal (it runs on another goroutine).
func OnThreadIn(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- enterAndRun(ns, fn)
	}()
	return <-errc
}

func enterAndRun(ns string, fn func() error) error {
	target, err := netns.GetFromPath(NetnsPath(ns))
	if err != nil {
		return fmt.Errorf("netns %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter netns %s: %w", ns, err)
	}
	cur, err := netns.Get()
	if err != nil {
		return err
	}
	defer cur.Close()
	if !cur.Equal(target) {
		return fmt.Errorf("the thread is not in netns %s after setns", ns)
	}
	return fn()
}

// NetlinkHandle opens a netlink handle for proto (unix.NETLINK_NETFILTER, ...) whose sockets live
// in the named namespace, whatever thread uses it: for tests that read or write that namespace's
// conntrack or links from Go without switching a thread.
func NetlinkHandle(ns string, proto int) (*netlink.Handle, error) {
	target, err := netns.GetFromPath(NetnsPath(ns))
	if err != nil {
		return nil, err
	}
	defer target.Close()
	return netlink.NewHandleAt(target, proto)
}
