package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The runner end to end: vmrun (built static, as the Makefile builds it) boots each cached kernel
// with the test program twice in one boot; the program checks it is in that kernel with no network
// device, prints a lot, and exits with the status asked for. These need qemu and the kernels
// (`make vm-kernels`): missing, they skip, or fail under CI=true.

const guestProg = "github.com/switchyard/switchyard/test/vm/testdata/guestprog"

// requireVM skips (fails under CI=true) when err says qemu or a kernel is missing.
func requireVM(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %v", err)
	}
	t.Skip(err)
}

// vmBinaries builds vmrun and the test program once per test binary.
func vmBinaries(t *testing.T) (vmrun, prog string) {
	t.Helper()
	dir := t.TempDir()
	vmrun, prog = filepath.Join(dir, "vmrun"), filepath.Join(dir, "guestprog")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := BuildPackages(ctx, dir, []string{"github.com/switchyard/switchyard/test/vm/cmd/vmrun", guestProg}); err != nil {
		t.Fatal(err)
	}
	for pkg, path := range map[string]string{"github.com/switchyard/switchyard/test/vm/cmd/vmrun": vmrun, guestProg: prog} {
		if err := os.Rename(filepath.Join(dir, goBuildName(pkg)), path); err != nil {
			t.Fatal(err)
		}
	}
	return vmrun, prog
}

// vmrunCmd runs vmrun; it returns the exit status, stdout and stderr.
func vmrunCmd(t *testing.T, vmrun string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, vmrun, args...)
	cmd.Env = append(os.Environ(), "VMTEST_VALUE=passed through")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("vmrun: %v", err)
	}
	t.Logf("vmrun %s: status %d in %v", strings.Join(args, " "), cmd.ProcessState.ExitCode(), time.Since(start).Round(10*time.Millisecond))
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func TestBootEachKernel(t *testing.T) {
	_, err := lookTool("qemu-system-x86_64")
	requireVM(t, err)
	var kernels []*Kernel
	for _, name := range KernelNames() {
		k, err := Cached(DefaultCacheDir(), name)
		requireVM(t, err)
		kernels = append(kernels, k)
	}
	vmrun, prog := vmBinaries(t)
	const lines = 5000
	for _, k := range kernels {
		t.Run(k.Name, func(t *testing.T) {
			code, stdout, stderr := vmrunCmd(t, vmrun, "-kernel", k.Name, "-offline", "-gobuild=", "-env", "EXTRA=yes",
				"--", prog, "-release", k.Release, "-lines", fmt.Sprint(lines), "-getenv", "VMTEST_VALUE",
				"--", prog, "-release", k.Release, "-getenv", "EXTRA", "-exit", "7")
			if code != 7 {
				t.Fatalf("status %d, want 7 (the second program's)\nstdout (tail): %s\nstderr: %s", code, tail(stdout, 10), stderr)
			}
			wantLines(t, stdout, lines)
			for _, want := range []string{
				"guestprog: in the guest: kernel " + k.Release + ", devices [lo]",
				"guestprog: exiting 0\n", "guestprog: exiting 7\n",
				"guestprog: VMTEST_VALUE=\n", // only CI, GO* basics, SWITCHYARD_* and -env pass
				"guestprog: EXTRA=yes\n",
			} {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q\nstdout (tail): %s", want, tail(stdout, 10))
				}
			}
		})
	}
	t.Run("status 0 and the go build shim", func(t *testing.T) {
		k := kernels[len(kernels)-1]
		code, stdout, stderr := vmrunCmd(t, vmrun, "-kernel", k.Name, "-offline", "-gobuild", guestProg,
			prog, "-release", k.Release, "-shim", guestProg)
		if code != 0 || !strings.Contains(stdout, "guestprog: built "+guestProg+" with the shim and ran it\n") {
			t.Fatalf("status %d, want 0 after the shim's build\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
	})
}

// wantLines checks that every numbered line arrived, in order, whole.
func wantLines(t *testing.T, stdout string, n int) {
	t.Helper()
	i := 0
	for _, line := range strings.Split(stdout, "\n") {
		if !strings.HasPrefix(line, "line ") {
			continue
		}
		if want := fmt.Sprintf("line %06d %s", i, strings.Repeat("x", 60)); line != want {
			t.Fatalf("line %d is %q, want %q", i, line, want)
		}
		i++
	}
	if i != n {
		t.Fatalf("%d of %d lines arrived\nstdout (tail): %s", i, n, tail(stdout, 5))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
