// Command vmrun runs test binaries (or any static or dynamic Linux program) inside a Debian
// kernel under qemu, with no network device, and exits with their status. It works as a
// `go test -exec` wrapper:
//
//	CGO_ENABLED=0 go test -exec "$(pwd)/bin/vmrun -kernel 6.1" ./iptables/
//
// go test then runs `vmrun -kernel 6.1 /tmp/go-build.../iptables.test -test.timeout=10m0s ...`
// in the package's directory: the binary and its arguments come after vmrun's own flags, and the
// package's testdata directory is copied to the same path in the guest. Several programs share one
// boot when separated by "--" (`vmrun -kernel 5.10 -- a.test -test.v -- b.test`); a directory
// stands for every executable in it. `vmrun -fetch all` downloads the kernels into the cache.
//
// The same binary is the guest's /init (it acts so as PID 1) and its `go build` shim.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/topology"
	"github.com/switchyard/switchyard/test/vm"
)

func main() {
	if vm.IsGuestInit() {
		vm.GuestInit()
	}
	if filepath.Base(os.Args[0]) == "go" {
		os.Exit(vm.GoShim(os.Args[1:]))
	}
	os.Exit(hostMain())
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// passEnv are the variables the guest's programs get from vmrun's environment, besides -env.
var passEnv = []string{"CI", "GOTRACEBACK", "GODEBUG", "GOMAXPROCS"}

func hostMain() int {
	var o vm.Options
	var env, copies listFlag
	kernel := flag.String("kernel", envOr("SWITCHYARD_VM_KERNEL", "6.1"), "kernel to boot: "+strings.Join(vm.KernelNames(), ", "))
	cache := flag.String("cache", vm.DefaultCacheDir(), "kernel cache directory")
	fetch := flag.String("fetch", "", "download these kernels (comma-separated, or all) into the cache and exit")
	refresh := flag.Bool("refresh", false, "with -fetch: fetch again when Debian has a newer package")
	offline := flag.Bool("offline", false, "never download: a kernel that is not cached is an error")
	modules := flag.String("modules", "", "more modules to load at boot (comma-separated)")
	tools := flag.String("tools", "", "more host programs, globs or trees to copy (comma-separated)")
	gobuild := flag.String("gobuild", topology.EchoPkg+","+topology.ProbePkg, "packages the guest's `go build` shim hands out (comma-separated, built here)")
	flag.Var(&env, "env", "NAME=VALUE for the programs (repeatable); "+strings.Join(passEnv, ", ")+" and SWITCHYARD_* pass through")
	flag.Var(&copies, "copy", "host file or tree copied to the same path in the guest (repeatable); each program's testdata always is")
	flag.IntVar(&o.MemoryMB, "mem", 2048, "guest memory in MB")
	flag.IntVar(&o.CPUs, "cpus", 2, "guest CPUs")
	flag.DurationVar(&o.Timeout, "timeout", time.Hour, "kill the guest after this long")
	flag.StringVar(&o.Append, "append", "", "more kernel command line")
	flag.BoolVar(&o.Vmlinuz, "vmlinuz", false, "boot the compressed bzImage instead of the ELF vmlinux")
	flag.BoolVar(&o.Keep, "keep", false, "keep the work directory (the initramfs)")
	flag.BoolVar(&o.Verbose, "v", false, "show the kernel console, warnings and the timings on stderr")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: vmrun [flags] [-C DIR] PROGRAM [ARGS...] [-- [-C DIR] PROGRAM [ARGS...]]...\n       vmrun -fetch all\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f := &vm.Fetcher{CacheDir: *cache, Log: os.Stderr}
	if *fetch != "" {
		return fetchKernels(ctx, f, *fetch, *refresh)
	}
	var err error
	if o.Programs, err = programs(flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		flag.Usage()
		return 2
	}
	if o.Kernel, err = vm.Cached(*cache, *kernel); err != nil && !*offline {
		o.Kernel, err = f.Fetch(ctx, *kernel, false)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		return 125
	}
	o.Modules = append(append([]string{}, vm.DefaultModules...), split(*modules)...)
	o.Tools = append(append([]string{}, vm.DefaultTools...), split(*tools)...)
	o.Env = append(inherited(), env...)
	o.Dir, _ = os.Getwd()
	o.Copy = copies
	if o.Init, err = os.Executable(); err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		return 125
	}
	tmp, err := os.MkdirTemp("", "vmrun-gobuild-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		return 125
	}
	defer os.RemoveAll(tmp)
	if o.GoBuild, err = vm.BuildPackages(ctx, tmp, split(*gobuild)); err != nil {
		fmt.Fprintln(os.Stderr, "vmrun: -gobuild:", err)
		return 125
	}
	res, err := vm.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		return 125
	}
	return res.ExitCode
}

func fetchKernels(ctx context.Context, f *vm.Fetcher, list string, refresh bool) int {
	names := split(list)
	if list == "all" {
		names = vm.KernelNames()
	}
	for _, n := range names {
		k, err := f.Fetch(ctx, n, refresh)
		if err != nil {
			fmt.Fprintln(os.Stderr, "vmrun:", err)
			return 1
		}
		fmt.Printf("%s\t%s\t%s\n", k.Name, k.Release, k.Dir)
	}
	return 0
}

// programs splits the arguments at "--" into programs with their arguments; a directory stands
// for every executable file in it, each with the arguments that follow. "-C DIR" before a
// program runs it in DIR (as go test would: its testdata is copied), not in the current one.
func programs(args []string) ([]vm.Program, error) {
	var out []vm.Program
	for len(args) > 0 {
		end := len(args)
		for i, a := range args {
			if a == "--" {
				end = i
				break
			}
		}
		spec, dir := args[:end], ""
		if len(spec) > 1 && spec[0] == "-C" {
			spec, dir = spec[2:], spec[1]
		}
		if len(spec) > 0 {
			ps, err := expand(spec[0], spec[1:], dir)
			if err != nil {
				return nil, err
			}
			out = append(out, ps...)
		}
		args = args[min(end+1, len(args)):]
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no program to run")
	}
	return out, nil
}

func expand(path string, args []string, dir string) ([]vm.Program, error) {
	if dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		dir = abs
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []vm.Program{{Path: path, Args: args, Dir: dir}}, nil
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var out []vm.Program
	for _, e := range ents {
		info, err := e.Info()
		if err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
			out = append(out, vm.Program{Path: filepath.Join(path, e.Name()), Args: args, Dir: dir})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func inherited() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "SWITCHYARD_") || slices.Contains(passEnv, name) {
			out = append(out, kv)
		}
	}
	return out
}

func split(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
