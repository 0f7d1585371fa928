// Package vm runs test binaries inside the Debian kernels operators run (5.10 from bullseye, 6.1
// and 6.12 from bookworm, the cloud flavour) under qemu, so that dataplane tests see IPVS, older
// eBPF and netfilter, and not only the host's kernel. The command is test/vm/cmd/vmrun.
//
// # Use
//
//	make vm-kernels                 # once: qemu, busybox, ...; the kernels into the cache
//	CGO_ENABLED=0 go test -exec "$(pwd)/bin/vmrun -kernel 6.1" ./iptables/ -run Conntrack
//	bin/vmrun -kernel 5.10 -- ./a.test -test.v -- ./b.test     # two programs, one boot
//
// As a `go test -exec` wrapper, vmrun receives the test binary's path followed by its arguments
// (-test.* flags), after its own flags, in the package's directory: that directory is the
// programs' working directory in the guest, and its testdata tree is copied there. Build test
// binaries static (CGO_ENABLED=0); a dynamic one still runs, with its libraries copied in. The exit
// status is the programs' (the first non-zero one; at most 127), or 125 when the runner failed.
// The programs get CI, GOTRACEBACK, GODEBUG, GOMAXPROCS, SWITCHYARD_* and -env values, and
// SWITCHYARD_VM=1 (tests that need the guest's kernel, like ipvs/'s, look for it).
//
// # The cache (~/.cache/switchyard/kernels, or $SWITCHYARD_KERNEL_CACHE)
//
// Fetcher takes the newest package of each kernel with `apt-get download` through a private apt
// configuration (apt/: its own sources list naming the machine's Debian mirrors, lists, status),
// so the machine's apt is untouched; `dpkg-deb -x` unpacks it into <name>/, `depmod -b` writes
// modules.dep, and the ELF vmlinux is taken out of the bzImage (PVH boot, ~3 s faster under TCG).
// A cached kernel is used without any network access; modules are decompressed once into
// <name>/plain-modules.
//
// # The guest
//
// qemu-system-x86_64 -machine q35 -accel tcg,thread=single -cpu max, 2 CPUs, 2048 MB, with
// -nodefaults -nic none: no network device, so nothing in the guest has a path out. The kernel
// console goes to ttyS0 (shown with -v, its last lines on failure), the programs' output to ttyS1
// (vmrun's stdout, raw: no \r added; drained before power-off so the last lines arrive).
//
// The two vCPUs take turns on one host thread: with a thread each (thread=multi), a vCPU could
// keep running kernel code another one had just patched, in its old form, and die of
// "Oops: int3" (see qemuArgs). A guest that still dies before its first program starts (the init
// prints "vmrun-init: run 0 ..." to the console, drained, right before it) is booted again, at
// most twice, with a line "vmrun: kernel ...: the guest died before the test started (...),
// booting again" on stderr; a guest that dies once a program started is a failure (status 125).
//
// The initramfs (uncompressed cpio, built per run in ~0.1 s) holds vmrun itself as /init (it acts
// as the guest's init when it is PID 1), busybox (sh, modprobe, ...: last in PATH), the host's
// ip, tc, nsenter, unshare, iptables/ip6tables (nft and legacy, with the xtables extensions), nft,
// ipvsadm, conntrack, tcpdump, curl and socat with their shared libraries, the modules of
// DefaultModules (plain .ko with a modules.dep of just them, for busybox modprobe), and the
// programs. The init mounts proc, sysfs, devtmpfs, devpts, tmpfs /run and /dev/shm (/tmp stays on the root file system), bpffs at
// /sys/fs/bpf and cgroup2 at /sys/fs/cgroup, loads the modules in parallel, brings up lo, runs
// each program (killing whatever it left behind), and passes the status out through qemu's
// isa-debug-exit device (qemu exits with (status<<1)|1).
//
// The guest has no Go toolchain: `go` there is a shim (vmrun again) that serves
// `go build -o OUT PKG` with binaries vmrun built on the host (-gobuild; by default the
// echo server and probe that test/topology builds in its TestMain).
package vm
