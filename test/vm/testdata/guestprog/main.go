// Command guestprog is the runner's own test program: it checks that it runs inside the guest
// (the kernel release it was told, no network device but loopback), prints as many lines as
// asked, and exits with the status asked for.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	release := flag.String("release", "", "the kernel release this must run on")
	lines := flag.Int("lines", 0, "lines to print")
	code := flag.Int("exit", 0, "exit status")
	getenv := flag.String("getenv", "", "an environment variable to print")
	shim := flag.String("shim", "", "a package to `go build` (the guest's shim) and run")
	flag.Parse()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		fail("uname: %v", err)
	}
	got := unix.ByteSliceToString(u.Release[:])
	if *release != "" && got != *release {
		fail("kernel release %s, want %s", got, *release)
	}
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		fail("%v", err)
	}
	var devs []string
	for _, e := range ents {
		devs = append(devs, e.Name())
	}
	if strings.Join(devs, ",") != "lo" {
		fail("network devices %v, want only lo", devs)
	}
	fmt.Printf("guestprog: in the guest: kernel %s, devices %v, pid %d, env CI=%q\n", got, devs, os.Getpid(), os.Getenv("CI"))
	if *getenv != "" {
		fmt.Printf("guestprog: %s=%s\n", *getenv, os.Getenv(*getenv))
	}
	if *shim != "" {
		out, err := exec.Command("go", "build", "-o", "/tmp/shimmed", *shim).CombinedOutput()
		if err != nil {
			fail("go build %s: %v: %s", *shim, err, out)
		}
		out, err = exec.Command("/tmp/shimmed", "-exit", "0").CombinedOutput()
		if err != nil {
			fail("/tmp/shimmed: %v: %s", err, out)
		}
		fmt.Printf("guestprog: built %s with the shim and ran it\n", *shim)
	}
	for i := 0; i < *lines; i++ {
		fmt.Printf("line %06d %s\n", i, strings.Repeat("x", 60))
	}
	fmt.Printf("guestprog: exiting %d\n", *code)
	os.Exit(*code)
}

func fail(format string, args ...any) {
	fmt.Printf("guestprog: "+format+"\n", args...)
	os.Exit(99)
}
