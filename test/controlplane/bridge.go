package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/process"
)

// maxSockPath keeps UNIX socket paths under sun_path's 108 bytes.
const maxSockPath = 100

// BridgeIntoNetns makes the API server reachable at https://127.0.0.1:port inside
// the network namespace at nsPath (e.g. /run/netns/NAME), with no listener
// outside loopback: a socat in this namespace listens on a UNIX socket in Dir and
// forwards to the API server's 127.0.0.1 port, and a socat inside the namespace
// (entered with nsenter --net, so it sees this mount namespace and the socket)
// listens on 127.0.0.1:port there and connects to the socket. The namespace's lo
// must be up. KubeconfigFor("https://127.0.0.1:PORT") gives processes inside the
// namespace a kubeconfig (the serving certificate is valid for 127.0.0.1).
//
// stop ends both socats; Stop ends bridges still open.
func (c *ControlPlane) BridgeIntoNetns(nsPath string, port int) (stop func() error, err error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("bridge port %d out of range", port)
	}
	socat, err := exec.LookPath("socat")
	if err != nil {
		return nil, fmt.Errorf("the bridge needs socat (test/prereqs.sh installs it): %w", err)
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("the bridge needs nsenter (util-linux): %w", err)
	}
	if _, err := os.Stat(nsPath); err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	apiPort := c.url[strings.LastIndexByte(c.url, ':')+1:]

	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil, errors.New("control plane stopped")
	}
	c.bridgeN++
	id := c.bridgeN
	sockDir := c.dir
	if len(filepath.Join(sockDir, "bridge-000000.sock")) > maxSockPath {
		if c.sockDir == "" {
			if c.sockDir, err = os.MkdirTemp("", "sy-cp-"); err != nil {
				c.mu.Unlock()
				return nil, err
			}
		}
		sockDir = c.sockDir
	}
	c.mu.Unlock()
	sock := filepath.Join(sockDir, fmt.Sprintf("bridge-%d.sock", id))
	logPath := c.path(fmt.Sprintf("bridge-%d.log", id))

	host, err := startProc("socat (bridge host side)", logPath, socat,
		fmt.Sprintf("UNIX-LISTEN:%s,fork,unlink-early,mode=600", sock),
		"TCP:127.0.0.1:"+apiPort+",nodelay")
	if err != nil {
		return nil, err
	}
	var inner *proc
	stopBoth := sync.OnceValue(func() error {
		var errs []error
		if inner != nil {
			errs = append(errs, inner.stop(5*time.Second))
		}
		errs = append(errs, host.stop(5*time.Second))
		if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitFor(ctx, host, func() bool { _, err := os.Stat(sock); return err == nil }); err != nil {
		return nil, errors.Join(fmt.Errorf("bridge socket %s: %w", sock, err), stopBoth())
	}
	inner, err = startProc("socat (bridge in "+nsPath+")", logPath, nsenter, "--net="+nsPath, socat,
		fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr,nodelay", port),
		"UNIX-CONNECT:"+sock)
	if err != nil {
		return nil, errors.Join(err, stopBoth())
	}
	// /proc/PID/net/tcp lists the sockets of PID's network namespace: wait for the
	// listener there.
	if err := waitFor(ctx, inner, func() bool { return sameNetns(inner.cmd.Process.Pid, nsPath) && listening(inner.cmd.Process.Pid, port) }); err != nil {
		return nil, errors.Join(fmt.Errorf("bridge listener on 127.0.0.1:%d in %s: %w", port, nsPath, err), stopBoth())
	}

	stop = func() error {
		c.mu.Lock()
		delete(c.bridges, id)
		c.mu.Unlock()
		return stopBoth()
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil, errors.Join(errors.New("control plane stopped"), stopBoth())
	}
	c.bridges[id] = stopBoth
	c.mu.Unlock()
	return stop, nil
}

// waitFor polls cond until it holds, p exits, or ctx ends.
func waitFor(ctx context.Context, p *proc, cond func() bool) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-p.done:
			return p.exitError()
		case <-ctx.Done():
			return fmt.Errorf("%w; last lines of %s:\n%s", ctx.Err(), p.log, process.TailFile(p.log, 10))
		case <-tick.C:
		}
	}
	return nil
}

// sameNetns reports whether pid is in the network namespace at nsPath.
func sameNetns(pid int, nsPath string) bool {
	var a, b syscall.Stat_t
	if syscall.Stat(nsPath, &a) != nil || syscall.Stat("/proc/"+strconv.Itoa(pid)+"/ns/net", &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// listening reports whether the network namespace of pid has a TCP socket
// listening on 127.0.0.1:port.
func listening(pid, port int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/tcp")
	if err != nil {
		return false
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st ...; st 0A is LISTEN.
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return true
		}
	}
	return false
}
