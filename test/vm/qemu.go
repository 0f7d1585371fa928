package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// qemuArgs boots kernel with initrd under TCG with no network device at all: the guest has no
// path out. ttyS0 carries the kernel console (to the host through fd 3), ttyS1 the programs'
// output (qemu's stdout).
//
// The vCPUs share one host thread (thread=single), not one each. With thread=multi, a vCPU that
// translates kernel code while another one patches it (a static key flipped: text_poke_bp
// writes an int3, then the new bytes) can keep a translation that still holds the int3 after the
// kernel finished patching and forgot it; when that CPU runs it, the kernel dies with
// "Oops: int3" on a line whose bytes no longer hold one. Seen at boot in enqueue_timer on 6.12
// (issue 12); a test flipping netstamp_needed_key while UDP crossed loopback killed 6.12 guests
// in 7 of 10 boots with thread=multi, none of 10 with thread=single (nor with one vCPU). Same
// report under TCG: github.com/multipath-tcp/mptcp_net-next/issues/471. It costs ~10% of a run.
func qemuArgs(o *Options, kernel, initrd string) []string {
	cmdline := "console=ttyS0 loglevel=4 panic=-1 mitigations=off random.trust_cpu=on rdinit=/init"
	if o.Append != "" {
		cmdline += " " + o.Append
	}
	return []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-nic", "none",
		"-machine", "q35", "-accel", "tcg,thread=single", "-cpu", "max",
		"-smp", strconv.Itoa(o.CPUs), "-m", strconv.Itoa(o.MemoryMB),
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
		"-chardev", "file,id=con,path=/dev/fd/3", "-serial", "chardev:con",
		"-chardev", "stdio,id=out,signal=off", "-serial", "chardev:out",
		"-device", fmt.Sprintf("isa-debug-exit,iobase=%#x,iosize=0x01", debugExitIO),
		"-no-reboot",
	}
}

// Timings are the milestones of one run, measured on the host from qemu's start.
type Timings struct {
	Init     time.Duration // the guest init started
	Modules  time.Duration // modules loaded, programs about to start
	Programs time.Duration // from the first program's start to the last one's end
	Total    time.Duration // qemu's whole life
	Uptime   string        // the guest's uptime when the init started
}

// bootResult is what a qemu run came to.
type bootResult struct {
	code    int // the guest init's status, when done
	done    bool
	started bool // the init announced the first program: from then on the test may have run
	timings Timings
	console []string // the last lines of the kernel console
	crash   []string // the kernel's first crash report line, and the RIP line after it
	qemuErr string
}

// errNoStatus is a guest that stopped without handing out a status: the kernel panicked (panic=-1
// and -no-reboot make qemu exit 0), or the init died.
var errNoStatus = errors.New("the guest stopped without an exit status (kernel panic, or the init died)")

func boot(ctx context.Context, o *Options, kernel, initrd string) (*bootResult, error) {
	qemu, err := lookTool("qemu-system-x86_64")
	if err != nil {
		return nil, err
	}
	conR, conW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer conR.Close()
	cmd := exec.CommandContext(ctx, qemu, qemuArgs(o, kernel, initrd)...)
	cmd.ExtraFiles = []*os.File{conW}
	cmd.Stdout = o.Stdout
	var qerr bytes.Buffer
	cmd.Stderr = &qerr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the runner
	cmd.WaitDelay = 5 * time.Second
	res := &bootResult{}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		conW.Close()
		return nil, err
	}
	conW.Close()
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		res.readConsole(conR, start, o)
	}()
	waitErr := cmd.Wait()
	res.timings.Total = time.Since(start)
	select { // qemu is gone: the reader drains the pipe and sees its end
	case <-consoleDone:
	case <-time.After(5 * time.Second):
		conR.Close()
		<-consoleDone
	}
	res.qemuErr = strings.TrimSpace(qerr.String())
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	var exit *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exit) {
		return res, waitErr
	}
	status := cmd.ProcessState.ExitCode()
	switch {
	case res.done && status == res.code<<1|1:
		return res, nil
	case res.done:
		return res, fmt.Errorf("the guest finished with status %d but qemu exited %d: %s", res.code, status, res.qemuErr)
	case status == 0:
		return res, errNoStatus
	default:
		return res, fmt.Errorf("qemu exited %d: %s", status, res.qemuErr)
	}
}

// readConsole follows the kernel console: the init's markers give the timings and the status,
// the last lines are kept for error reports, and everything goes to Stderr when verbose.
func (r *bootResult) readConsole(rd io.Reader, start time.Time, o *Options) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var firstRun time.Duration
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if o.Verbose {
			fmt.Fprintln(o.Stderr, "console: "+line)
		}
		if r.console = append(r.console, line); len(r.console) > 60 {
			r.console = r.console[1:]
		}
		r.noteCrash(line)
		rest, ok := strings.CutPrefix(line, initMarker+" ")
		if !ok {
			continue
		}
		now := time.Since(start)
		f := strings.Fields(rest)
		switch {
		case len(f) > 0 && f[0] == "start":
			r.timings.Init = now
			r.timings.Uptime = strings.TrimPrefix(f[len(f)-1], "uptime=")
		case len(f) > 0 && f[0] == "modules":
			r.timings.Modules = now
		case len(f) > 1 && f[0] == "run":
			if !r.started {
				r.started, firstRun = true, now
			}
		case len(f) > 0 && f[0] == "exit":
			r.timings.Programs = now - firstRun
		case len(f) > 1 && f[0] == "done":
			if c, err := strconv.Atoi(strings.TrimPrefix(f[1], "rc=")); err == nil {
				r.code, r.done = c, true
			}
		case len(f) > 2 && f[0] == "module" && strings.HasPrefix(f[2], "took="):
		default: // the init reports a problem: a module that did not load, a mount that failed
			if !o.Verbose {
				fmt.Fprintln(o.Stderr, "vmrun: guest: "+rest)
			}
		}
	}
}

// crashStarts are how the kernel begins a crash report (after the "[  1.234567] " time stamp):
// an oops ("Oops: int3: 0000 [#1]" since 6.x, "int3: 0000 [#1]" before), a BUG, a panic.
var crashStarts = []string{"Oops: ", "BUG: ", "Kernel panic - ", "general protection fault", "int3: ", "invalid opcode: "}

// noteCrash keeps the first crash report line and the RIP line that follows it: they say why a
// guest died when the console's last lines have scrolled past them.
func (r *bootResult) noteCrash(line string) {
	msg := line
	if _, rest, ok := strings.Cut(line, "] "); ok && strings.HasPrefix(line, "[") {
		msg = rest
	}
	switch {
	case len(r.crash) == 0:
		for _, p := range crashStarts {
			if strings.HasPrefix(msg, p) {
				r.crash = []string{msg}
				return
			}
		}
	case len(r.crash) == 1 && strings.HasPrefix(msg, "RIP: "):
		r.crash = append(r.crash, msg)
	}
}

// diedBeforeStart tells a guest that died before its first program started (err is boot's
// error). Nothing of the test ran, and what kills a guest that early is the emulator (see
// qemuArgs) or the kernel at boot, not the code under test: booting again is safe.
func (r *bootResult) diedBeforeStart(err error) bool {
	return r != nil && errors.Is(err, errNoStatus) && !r.started
}

// deathReason is the kernel's crash report line for a message, or what little is known.
func (r *bootResult) deathReason() string {
	if len(r.crash) == 0 {
		return "no kernel crash report on the console"
	}
	return strings.Join(r.crash, ", ")
}
