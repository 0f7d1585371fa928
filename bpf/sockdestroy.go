package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// UDP sockets connected to a backend keep sending to it after it is gone: the
// address was rewritten once, at connect(). Destroying them (sock_diag
// SOCK_DESTROY) makes the next send fail, so the client reconnects and the hooks
// pick a live backend. TCP connections are left alone: they fail by themselves,
// and a terminating backend may still finish them.

// SocketDestroyer destroys the UDP sockets connected to the given backends in
// every network namespace of the processes under a cgroup.
type SocketDestroyer struct {
	Cgroup string // the cgroup v2 directory the hooks are attached to
}

// Destroy destroys the connected UDP sockets whose peer is one of backends.
func (d SocketDestroyer) Destroy(backends []netip.AddrPort) error {
	if len(backends) == 0 {
		return nil
	}
	nss, err := netnsOfCgroup(d.Cgroup)
	if err != nil {
		return err
	}
	want := map[netip.AddrPort]bool{}
	for _, b := range backends {
		want[netip.AddrPortFrom(b.Addr().Unmap(), b.Port())] = true
	}
	var errs []error
	for _, path := range nss {
		if err := destroyIn(path, want); err != nil {
			errs = append(errs, fmt.Errorf("network namespace of %s: %w", path, err))
		}
	}
	return errors.Join(errs...)
}

// netnsOfCgroup returns one /proc/PID/ns/net path per network namespace of the
// processes in the cgroup and its descendants.
func netnsOfCgroup(cgroup string) ([]string, error) {
	seen := map[uint64]bool{}
	var out []string
	err := filepath.WalkDir(cgroup, func(path string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return err
		}
		procs, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil // a cgroup that went away meanwhile
		}
		for _, f := range strings.Fields(string(procs)) {
			if _, err := strconv.Atoi(f); err != nil {
				continue
			}
			p := "/proc/" + f + "/ns/net"
			var st unix.Stat_t
			if unix.Stat(p, &st) != nil || seen[st.Ino] {
				continue // exited meanwhile, or a namespace seen already
			}
			seen[st.Ino] = true
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// destroyIn dumps the UDP sockets of one namespace and destroys those connected
// to a backend in want.
func destroyIn(nsPath string, want map[netip.AddrPort]bool) error {
	fd, err := diagSocketIn(nsPath)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var errs []error
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		ids, err := dumpUDP(fd, family)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, id := range ids {
			if want[peerOf(family, id)] {
				errs = append(errs, sockDiag(fd, unix.SOCK_DESTROY, unix.NLM_F_ACK, family, id, nil))
			}
		}
	}
	return errors.Join(errs...)
}

// diagSocketIn opens a sock_diag netlink socket inside the namespace. A socket
// belongs to the namespace it was created in, so only its creation needs a thread
// in that namespace: a goroutine of its own, locked to its thread, which switches
// back afterwards, and which exits still locked (ending the thread) if it cannot.
func diagSocketIn(nsPath string) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, back, err := socketInNetns(nsPath)
		if back {
			runtime.UnlockOSThread()
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// socketInNetns runs on a locked thread; back says the thread is in its own
// namespace again.
func socketInNetns(nsPath string) (fd int, back bool, err error) {
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, true, err
	}
	defer unix.Close(self)
	ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, true, err
	}
	defer unix.Close(ns)
	if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
		return -1, true, fmt.Errorf("setns: %w", err)
	}
	fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if berr := unix.Setns(self, unix.CLONE_NEWNET); berr != nil {
		if err == nil {
			unix.Close(fd) // in the other namespace's socket: of no use now
		}
		return -1, false, fmt.Errorf("setns back: %w", berr)
	}
	return fd, true, err
}

// sockID is inet_diag_sockid: ports and addresses in network order.
type sockID [48]byte

func peerOf(family uint8, id sockID) netip.AddrPort {
	port := binary.BigEndian.Uint16(id[2:4])
	if family == unix.AF_INET {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(id[20:24])), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte(id[20:36])).Unmap(), port)
}

// dumpUDP lists the connected UDP sockets of a family.
func dumpUDP(fd int, family uint8) ([]sockID, error) {
	var ids []sockID
	err := sockDiag(fd, unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP, family, sockID{}, func(msg []byte) {
		// inet_diag_msg: family, state, timer, retrans, then the sockid.
		if len(msg) >= 4+len(sockID{}) {
			ids = append(ids, sockID(msg[4:4+len(sockID{})]))
		}
	})
	return ids, err
}

// sockDiag sends one inet_diag_req_v2 for UDP and reads the answers until done.
func sockDiag(fd int, typ, flags uint16, family uint8, id sockID, each func([]byte)) error {
	req := make([]byte, unix.SizeofNlMsghdr+8+len(id))
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], typ)
	binary.NativeEndian.PutUint16(req[6:], flags|unix.NLM_F_REQUEST)
	b := req[unix.SizeofNlMsghdr:]
	b[0], b[1] = family, unix.IPPROTO_UDP
	binary.NativeEndian.PutUint32(b[4:], 1<<1) // states: TCP_ESTABLISHED, i.e. connected
	copy(b[8:], id[:])
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if errno := -int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
					if syscall.Errno(errno) == unix.ENOENT {
						return nil // gone meanwhile
					}
					return syscall.Errno(errno)
				}
				return nil // the ACK
			default:
				if each != nil {
					each(m.Data)
				}
			}
		}
	}
}
