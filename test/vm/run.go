package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Program is a host binary to run in the guest, with its arguments and working directory (the
// Options' Dir when empty; its testdata tree is copied into the guest).
type Program struct {
	Path string
	Args []string
	Dir  string
}

// Options configure one boot.
type Options struct {
	Kernel   *Kernel
	Programs []Program
	Env      []string          // NAME=VALUE for every program (on top of PATH, HOME, TMPDIR)
	Dir      string            // the programs' default working directory (created in the guest)
	Copy     []string          // host files and trees copied to the same paths in the guest
	Modules  []string          // loaded at boot, with their dependencies
	Tools    []string          // host programs, globs and trees to copy (DefaultTools)
	GoBuild  map[string]string // package path -> host binary, for the guest's `go build` shim
	Init     string            // the guest's /init: the runner's own binary
	MemoryMB int
	CPUs     int
	Timeout  time.Duration
	Append   string // more kernel command line
	Vmlinuz  bool   // boot the compressed bzImage rather than the ELF vmlinux
	Keep     bool   // keep the work directory (initramfs) and print where it is
	Verbose  bool   // the kernel console and the timings on Stderr
	Stdout   io.Writer
	Stderr   io.Writer
}

// Result is what a boot came to: the status of the programs (the first non-zero one, at most
// 127) and the timings.
type Result struct {
	ExitCode      int
	Timings       Timings
	InitramfsSize int64
	BuildTime     time.Duration // assembling the initramfs
}

func (o *Options) defaults() {
	if o.Modules == nil {
		o.Modules = DefaultModules
	}
	if o.Tools == nil {
		o.Tools = DefaultTools
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = 2048
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if o.Timeout == 0 {
		o.Timeout = time.Hour
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Dir == "" {
		o.Dir, _ = os.Getwd()
	}
}

// Run boots the kernel with the programs and returns their status. An error means the guest did
// not get to report one (qemu failed, the kernel panicked, the timeout struck); the kernel
// console's last lines are then on Stderr.
func Run(ctx context.Context, o Options) (*Result, error) {
	o.defaults()
	if o.Kernel == nil || len(o.Programs) == 0 {
		return nil, errors.New("vm.Run: a kernel and at least one program are needed")
	}
	warn := func(format string, args ...any) {
		if o.Verbose {
			fmt.Fprintf(o.Stderr, "vmrun: "+format+"\n", args...)
		}
	}
	work, err := os.MkdirTemp("", "vmrun-")
	if err != nil {
		return nil, err
	}
	if o.Keep {
		fmt.Fprintf(o.Stderr, "vmrun: work directory %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	res := &Result{}
	start := time.Now()
	initrd := filepath.Join(work, "initramfs.cpio")
	if res.InitramfsSize, err = writeInitramfs(ctx, &o, initrd, warn); err != nil {
		return nil, err
	}
	res.BuildTime = time.Since(start)
	kernel := o.Kernel.Vmlinux()
	if kernel == "" || o.Vmlinuz {
		kernel = o.Kernel.Vmlinuz()
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	br, err := bootRetrying(&o, func() (*bootResult, error) { return boot(ctx, &o, kernel, initrd) })
	if br != nil {
		res.Timings = br.timings
		res.ExitCode = br.code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %v", o.Timeout)
	}
	if err != nil {
		if br != nil && !o.Verbose {
			fmt.Fprintf(o.Stderr, "vmrun: the kernel console's last lines:\n  %s\n", strings.Join(br.console, "\n  "))
		}
		if br != nil && len(br.crash) > 0 { // its first lines may have scrolled out of the above
			fmt.Fprintf(o.Stderr, "vmrun: the kernel crashed: %s\n", br.deathReason())
		}
		return res, fmt.Errorf("kernel %s: %w", o.Kernel.Release, err)
	}
	if o.Verbose {
		t := res.Timings
		fmt.Fprintf(o.Stderr, "vmrun: kernel %s: initramfs %d MB in %.2fs; init at %.2fs (guest uptime %ss), modules loaded at %.2fs, programs %.2fs, qemu exited at %.2fs, status %d\n",
			o.Kernel.Release, res.InitramfsSize>>20, res.BuildTime.Seconds(), t.Init.Seconds(), t.Uptime,
			t.Modules.Seconds(), t.Programs.Seconds(), t.Total.Seconds(), res.ExitCode)
	}
	return res, nil
}

// bootAttempts bounds the boots of one run: a guest that dies before its first program starts is
// booted again, at most twice (see bootResult.diedBeforeStart).
const bootAttempts = 3

// bootRetrying boots until the guest gets to run the programs or bootAttempts are used up, saying
// on Stderr why it boots again. A guest that dies once a program started is never booted again:
// that may be the test's doing, and the test's output is already out.
func bootRetrying(o *Options, bootOnce func() (*bootResult, error)) (*bootResult, error) {
	for attempt := 1; ; attempt++ {
		br, err := bootOnce()
		if attempt == bootAttempts || !br.diedBeforeStart(err) {
			return br, err
		}
		fmt.Fprintf(o.Stderr, "vmrun: kernel %s: the guest died before the test started (%s), booting again (boot %d of at most %d)\n",
			o.Kernel.Release, br.deathReason(), attempt+1, bootAttempts)
	}
}

func writeInitramfs(ctx context.Context, o *Options, path string, warn func(string, ...any)) (int64, error) {
	p := &plan{Release: o.Kernel.Release, Deps: map[string][]string{}, Params: map[string]string{}}
	a, err := buildInitramfs(ctx, o, p, warn)
	if err != nil {
		return 0, fmt.Errorf("initramfs: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := a.writeTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}
