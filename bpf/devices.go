package bpf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"runtime"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"k8s.io/klog/v2"
)

// Device is a network device of the node.
type Device struct {
	Name  string
	Index int
	// External devices face the outside of the node (they get the programs for traffic from outside).
	External bool
}

// ListDevices lists the devices of the current netns but lo, sorted by name. Devices that are down
// are listed too: they may come up. A device is External when its name matches one of explicit
// (names or path.Match patterns such as "eth*"; each must match a device) or, when explicit is
// empty, when it carries one of nodeIPs.
func ListDevices(explicit []string, nodeIPs []netip.Addr) ([]Device, error) {
	links, err := linkList()
	if err != nil {
		return nil, fmt.Errorf("bpf: list devices: %w", err)
	}
	var devs []Device
	for _, l := range links {
		if a := l.Attrs(); a.Name != "lo" {
			devs = append(devs, Device{Name: a.Name, Index: a.Index})
		}
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Name < devs[j].Name })
	if len(explicit) > 0 {
		err = markExplicit(devs, explicit)
	} else {
		err = markAddressed(devs, nodeIPs)
	}
	if err != nil {
		return nil, fmt.Errorf("bpf: list devices: %w", err)
	}
	return devs, nil
}

func markExplicit(devs []Device, patterns []string) error {
	for _, pat := range patterns {
		found := false
		for i := range devs {
			ok, err := path.Match(pat, devs[i].Name)
			if err != nil {
				return fmt.Errorf("device pattern %q: %w", pat, err)
			}
			if ok {
				devs[i].External, found = true, true
			}
		}
		if !found {
			return fmt.Errorf("no device matches %q", pat)
		}
	}
	return nil
}

func markAddressed(devs []Device, nodeIPs []netip.Addr) error {
	if len(nodeIPs) == 0 {
		return nil
	}
	want := map[netip.Addr]bool{}
	for _, ip := range nodeIPs {
		want[ip.Unmap()] = true
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	carriers := map[int]bool{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && want[ip.Unmap()] {
			carriers[a.LinkIndex] = true
		}
	}
	for i := range devs {
		devs[i].External = carriers[devs[i].Index]
	}
	return nil
}

func linkList() ([]netlink.Link, error) { return retryDump(netlink.LinkList) }

// retryDump retries a netlink dump that a concurrent change interrupted (its result may be
// inconsistent then), a few times.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		out, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == 4 {
			return out, err
		}
	}
}

// linkWatchCoalesce is the least time between two calls of WatchLinks's notify: a pod start changes
// several links and addresses at once.
const linkWatchCoalesce = 100 * time.Millisecond

// WatchLinks calls notify whenever a link is added, changed or removed, or an address is added or
// removed, in the netns of the calling thread, until ctx is done; bursts of changes make one call,
// at most one per 100ms. It returns once subscribed. Should the subscription break (the kernel
// drops messages when the socket buffer overflows), it subscribes again and calls notify, since
// changes may have been missed.
func WatchLinks(ctx context.Context, notify func()) error {
	// The handle, not the thread: the goroutines below run on any thread, and re-subscribing must
	// reach the same netns.
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("bpf: watch links: current netns: %w", err)
	}
	w := &linkWatch{ns: ns, kick: make(chan struct{}, 1)}
	sub, err := w.subscribe()
	if err != nil {
		return errors.Join(err, ns.Close())
	}
	go w.run(ctx, sub)
	go w.notifier(ctx, notify)
	return nil
}

type linkWatch struct {
	ns   netns.NsHandle
	kick chan struct{} // a change is waiting to be notified
}

// subscription is one pair of netlink subscriptions; closing done ends both.
type subscription struct {
	links chan netlink.LinkUpdate
	addrs chan netlink.AddrUpdate
	errs  chan error
	done  chan struct{}
}

func (w *linkWatch) subscribe() (*subscription, error) {
	s := &subscription{
		links: make(chan netlink.LinkUpdate, 64), addrs: make(chan netlink.AddrUpdate, 64),
		errs: make(chan error, 1), done: make(chan struct{}),
	}
	onErr := func(err error) {
		select {
		case s.errs <- err:
		default: // one pending error is enough to resynchronize
		}
	}
	const rcvbuf = 1 << 20 // a node with many pods changes many links at once
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := w.nsOption()
	if err != nil {
		return nil, err
	}
	err = netlink.LinkSubscribeWithOptions(s.links, s.done, netlink.LinkSubscribeOptions{
		Namespace: ns, ErrorCallback: onErr, ReceiveBufferSize: rcvbuf,
	})
	if err != nil {
		return nil, fmt.Errorf("bpf: watch links: subscribe to links: %w", err)
	}
	err = netlink.AddrSubscribeWithOptions(s.addrs, s.done, netlink.AddrSubscribeOptions{
		Namespace: ns, ErrorCallback: onErr, ReceiveBufferSize: rcvbuf,
	})
	if err != nil {
		close(s.done)
		go drain(s.links)
		return nil, fmt.Errorf("bpf: watch links: subscribe to addresses: %w", err)
	}
	return s, nil
}

// nsOption is the Namespace for a subscription made on the calling (locked) thread: none when
// the thread is in the watched netns already, as every thread of an agent running in one netns
// is, since netlink's setns into it would need CAP_SYS_ADMIN, which the DaemonSet does not grant.
func (w *linkWatch) nsOption() (*netns.NsHandle, error) {
	cur, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("bpf: watch links: current netns: %w", err)
	}
	defer cur.Close()
	if cur.Equal(w.ns) {
		return nil, nil
	}
	return &w.ns, nil
}

// close ends the subscription. Its receivers exit once they see done, which they may be blocked
// sending to us: drain them.
func (s *subscription) close() {
	close(s.done)
	go drain(s.links)
	go drain(s.addrs)
}

func drain[T any](ch <-chan T) {
	for range ch {
	}
}

func (w *linkWatch) run(ctx context.Context, s *subscription) {
	defer w.ns.Close()
	for {
		ok := true
		select {
		case <-ctx.Done():
			s.close()
			return
		case _, ok = <-s.links:
		case _, ok = <-s.addrs:
		case err := <-s.errs:
			// Lost or undecodable messages: what changed is unknown, so notify anyway.
			klog.ErrorS(err, "Link watch: netlink error; resynchronizing")
		}
		if !ok {
			s.close()
			if s = w.resubscribe(ctx); s == nil {
				return
			}
		}
		w.signal()
	}
}

// resubscribe subscribes again until it works or ctx is done (nil then).
func (w *linkWatch) resubscribe(ctx context.Context) *subscription {
	for {
		s, err := w.subscribe()
		if err == nil {
			return s
		}
		klog.ErrorS(err, "Link watch: subscribing again")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (w *linkWatch) signal() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// notifier calls notify once per burst: it waits linkWatchCoalesce after the first change, so the
// rest of the burst arrives, and changes during notify make the next call.
func (w *linkWatch) notifier(ctx context.Context, notify func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		}
		t := time.NewTimer(linkWatchCoalesce)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		select {
		case <-w.kick: // part of this burst
		default:
		}
		notify()
	}
}
