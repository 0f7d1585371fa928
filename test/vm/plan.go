package vm

// The initramfs layout the host writes and the guest init reads.
const (
	guestDir     = "/vmrun"
	planPath     = guestDir + "/plan.json"
	guestBinDir  = guestDir + "/bin"     // the programs to run, one directory each
	goBuildDir   = guestDir + "/gobuild" // prebuilt packages the guest's `go build` shim hands out
	busyboxDir   = guestDir + "/busybox" // busybox applet links, last in PATH
	goShimPath   = "/usr/local/bin/go"
	guestPATH    = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + busyboxDir
	outputTTY    = "/dev/ttyS1" // the programs' output: the host's stdout
	consoleTTY   = "/dev/ttyS0" // the kernel console and the init's own messages
	debugExitIO  = 0xf4         // qemu's isa-debug-exit: writing v exits qemu with (v<<1)|1
	initMarker   = "vmrun-init:"
	maxGuestCode = 127 // the largest status isa-debug-exit can carry through qemu's exit code
)

// plan is what the guest init does: load modules, then run each program in turn.
type plan struct {
	Release string              `json:"release"`
	Modules []string            `json:"modules"` // module files in load order
	Deps    map[string][]string `json:"deps"`    // module file -> the files it needs loaded first
	Params  map[string]string   `json:"params"`  // module file -> its parameters
	Runs    []planRun           `json:"runs"`
}

type planRun struct {
	Path string   `json:"path"`
	Args []string `json:"args"`
	Dir  string   `json:"dir"`
	Env  []string `json:"env"`
}
