package image

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startContainerd runs a throwaway containerd with its own root, state and
// socket under a temporary directory (no CRI plugin: nothing but the content
// and image services is needed) and stops it when the test ends.
func startContainerd(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		log.Close()
	})
	if err := waitForContainerd(sock); err != nil {
		logData, _ := os.ReadFile(log.Name())
		t.Fatalf("%v; its log:\n%s", err, logData)
	}
	return sock
}

func waitForContainerd(sock string) error {
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = exec.Command("ctr", "-a", sock, "version").Run(); err == nil {
			return nil
		}
	}
	return errors.Join(errors.New("containerd did not answer in 15 s"), err)
}

func ctr(t *testing.T, sock string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ctr", append([]string{"-a", sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// containerd 1.6 imports the archives (unpacking them into its snapshotter)
// under their refs and digests, and the tools layer is stored once.
func TestCtrImportsTheArchives(t *testing.T) {
	requireRoot(t)
	requireTools(t, "containerd", "ctr", "go", "apt-get", "apt-cache", "dpkg-deb")
	sock := startContainerd(t)
	var rs []*Result
	for _, name := range []string{"pause", "switchyard"} {
		r := builtImage(t, name)
		ctr(t, sock, "images", "import", r.Path)
		rs = append(rs, r)
	}
	ls := ctr(t, sock, "images", "ls")
	for _, r := range rs {
		if !hasImage(ls, r.Ref, r.Digest.String()) {
			t.Errorf("ctr images ls has no %s at %s:\n%s", r.Ref, r.Digest, ls)
		}
	}
}

// hasImage finds a `ctr images ls` line with the ref and digest.
func hasImage(ls, ref, digest string) bool {
	for _, line := range strings.Split(ls, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref && f[2] == digest {
			return true
		}
	}
	return false
}
