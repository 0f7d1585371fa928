package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// IsGuestInit tells whether this process is the guest's init (the runner's binary is /init there).
func IsGuestInit() bool { return os.Getpid() == 1 }

// GuestInit is the guest's PID 1: it mounts what a node has (proc, sys, devtmpfs, bpffs, cgroup2,
// tmpfs /run), loads the modules, brings up loopback, runs the programs of the plan one
// after the other with their output on the second serial port, then hands the first non-zero exit
// status to the host through isa-debug-exit. It never returns.
func GuestInit() {
	con := os.Stderr // the kernel opened /dev/console (ttyS0) for us
	logf := func(format string, args ...any) {
		fmt.Fprintf(con, initMarker+" "+format+" uptime=%s\n", append(args, uptime())...)
	}
	rc, err := guestRun(logf)
	if err != nil {
		logf("error: %v", err)
		rc = maxGuestCode
	}
	logf("done rc=%d", rc)
	drain(con)
	unix.Sync()
	exitQemu(rc)
	time.Sleep(time.Second) // isa-debug-exit missing: power off, the host sees no status
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func guestRun(logf func(string, ...any)) (int, error) {
	if err := mountAll(); err != nil {
		return 0, err
	}
	logf("start")
	var p plan
	raw, err := os.ReadFile(planPath)
	if err == nil {
		err = json.Unmarshal(raw, &p)
	}
	if err != nil {
		return 0, fmt.Errorf("plan: %w", err)
	}
	_ = unix.Sethostname([]byte("vmrun"))
	if err := loopbackUp(); err != nil {
		logf("loopback: %v", err)
	}
	start := time.Now()
	loadModules(&p, logf)
	logf("modules n=%d took=%.2fs", len(p.Modules), time.Since(start).Seconds())
	out, err := os.OpenFile(outputTTY, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return 0, err
	}
	rawOutput(out)
	rc := 0
	for i, r := range p.Runs {
		logf("run %d %s", i, r.Path)
		// The host boots again a guest that dies before this marker (bootRetrying): it must be
		// out of the serial port before the program starts, not in the tty's buffer, which a
		// kernel panic does not flush.
		drain(os.Stderr)
		if len(p.Runs) > 1 {
			fmt.Fprintf(out, "vmrun: === %s (in %s)\n", r.Path, r.Dir)
		}
		code := runOne(r, out)
		if len(p.Runs) > 1 {
			fmt.Fprintf(out, "vmrun: === %s exited %d\n", r.Path, code)
		}
		if code != 0 && rc == 0 {
			rc = code
		}
		logf("exit %d code=%d", i, code)
	}
	drain(out)
	return min(rc, maxGuestCode), nil
}

func mountAll() error {
	const nosuid, nodev, noexec = unix.MS_NOSUID, unix.MS_NODEV, unix.MS_NOEXEC
	for _, m := range []struct {
		fstype, target, data string
		flags                uintptr
	}{
		{"proc", "/proc", "", nosuid | nodev | noexec},
		{"sysfs", "/sys", "", nosuid | nodev | noexec},
		{"devtmpfs", "/dev", "mode=0755", nosuid},
		{"devpts", "/dev/pts", "mode=0620,ptmxmode=0666", nosuid | noexec},
		{"tmpfs", "/dev/shm", "mode=1777", nosuid | nodev},
		{"tmpfs", "/run", "mode=0755", nosuid | nodev},
		{"bpf", "/sys/fs/bpf", "mode=0700", 0},
		{"cgroup2", "/sys/fs/cgroup", "", nosuid | nodev | noexec},
		{"debugfs", "/sys/kernel/debug", "", 0},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil && m.fstype != "debugfs" {
			return err
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil && m.fstype != "debugfs" {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	// /tmp stays on the root file system (in memory already): a tmpfs there would hide
	// what the initramfs carries under /tmp, such as a checkout's testdata when the
	// checkout itself is under /tmp.
	return os.Chmod("/tmp", 0o1777)
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// runOne runs a program to its end, reaping every orphan meanwhile (this is PID 1), then kills
// whatever it left running.
func runOne(r planRun, out *os.File) int {
	_ = os.MkdirAll(r.Dir, 0o755)
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	p, err := os.StartProcess(r.Path, append([]string{r.Path}, r.Args...),
		&os.ProcAttr{Dir: r.Dir, Env: r.Env, Files: []*os.File{null, out, out}})
	if err != nil {
		fmt.Fprintf(out, "vmrun: %v\n", err)
		return maxGuestCode
	}
	code := 0
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			fmt.Fprintf(out, "vmrun: wait: %v\n", err)
			code = maxGuestCode
			break
		}
		if pid != p.Pid {
			continue
		}
		switch {
		case ws.Exited():
			code = ws.ExitStatus()
		case ws.Signaled():
			code = 128 + int(ws.Signal())
			fmt.Fprintf(out, "vmrun: %s killed by signal %d (%v)\n", r.Path, ws.Signal(), ws.Signal())
		}
		break
	}
	_ = unix.Kill(-1, unix.SIGKILL) // everything but init
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
		if errors.Is(err, unix.ECHILD) {
			break
		}
		if pid == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return code
}

// rawOutput turns off output post-processing (\n -> \r\n) on the serial port.
func rawOutput(f *os.File) {
	t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		return
	}
	t.Oflag &^= unix.OPOST
	_ = unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t)
}

// drain waits until the serial port has sent everything written to it (tcdrain): without it the
// last lines can be lost when qemu exits.
func drain(f *os.File) { _ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1) }

func exitQemu(code int) {
	runtime.LockOSThread() // ioperm is per thread
	if err := unix.Ioperm(debugExitIO, 1, 1); err != nil {
		fmt.Fprintf(os.Stderr, "%s ioperm: %v\n", initMarker, err)
		return
	}
	outb(debugExitIO, uint8(code))
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	if v, err := strconv.ParseFloat(f[0], 64); err == nil {
		return fmt.Sprintf("%.2f", v)
	}
	return f[0]
}

// GoShim stands in for `go build -o OUT PKG` in the guest, which has no Go toolchain: it copies the
// binary of PKG that the host built beforehand (vmrun -gobuild). It returns the exit status.
func GoShim(args []string) int {
	out, pkg := "", ""
	if len(args) > 0 && args[0] == "build" {
		for i := 1; i < len(args); i++ {
			switch {
			case args[i] == "-o" && i+1 < len(args):
				out = args[i+1]
				i++
			case !strings.HasPrefix(args[i], "-"):
				pkg = args[i]
			}
		}
	}
	if out == "" || pkg == "" {
		fmt.Fprintf(os.Stderr, "go (vmrun guest shim): only `go build -o OUT PKG` works here, not `go %s`\n", strings.Join(args, " "))
		return 2
	}
	b, err := os.ReadFile(goBuildDir + "/" + goBuildName(pkg))
	if err != nil {
		fmt.Fprintf(os.Stderr, "go (vmrun guest shim): %s was not built on the host: pass `-gobuild %s` to vmrun\n", pkg, pkg)
		return 1
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		out += "/" + pkg[strings.LastIndex(pkg, "/")+1:]
	}
	if err := os.WriteFile(out, b, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "go (vmrun guest shim):", err)
		return 1
	}
	return 0
}

func goBuildName(pkg string) string { return strings.ReplaceAll(pkg, "/", "__") }
