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
func qemuArgs(o *Options, kernel, initrd string) []string {
	cmdline := "console=ttyS0 loglevel=4 panic=-1 mitigations=off random.trust_cpu=on rdinit=/init"
	if o.Append != "" {
		cmdline += " " + o.Append
	}
	return []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-nic", "none",
		"-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max",
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
	timings Timings
	console []string // the last lines of the kernel console
	qemuErr string
}

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
		return res, errors.New("the guest stopped without an exit status (kernel panic, or the init died)")
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
		case len(f) > 1 && f[0] == "run" && f[1] == "0":
			firstRun = now
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
