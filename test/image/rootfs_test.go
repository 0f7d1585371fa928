package image

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/switchyard/switchyard/test/controlplane"
)

// rootfsOf reads an image's archive back (with go-containerregistry's layout
// reader) and extracts its flattened filesystem into a temporary directory.
func rootfsOf(t *testing.T, r *Result) string {
	t.Helper()
	desc, img := readArchive(t, r.Path)
	if desc.Digest != r.Digest || desc.Annotations[annotationRefName] != r.Ref {
		t.Fatalf("%s: index.json names %s %s, want %s %s", r.Path, desc.Annotations[annotationRefName], desc.Digest, r.Ref, r.Digest)
	}
	dir := t.TempDir()
	extractRootfs(t, img, dir)
	return dir
}

// runIn runs a program of the rootfs chrooted into it (in a fresh network
// namespace when netns is set), with stdin, and returns its output.
func runIn(t *testing.T, root string, netns bool, stdin string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = "/", defaultEnv
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	if netns {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("chroot %s %s: %v: %s", root, strings.Join(argv, " "), err, out.String())
	}
	return out.String()
}

// restoreInput uses extensions iptables loads with dlopen from the xtables
// directory (tcp, udp, comment, conntrack, statistic, mark, REJECT, DNAT,
// MASQUERADE), as the agent's and kube-proxy's rules do.
func restoreInput(ip string) string {
	return `*filter
:SWITCHYARD-TEST - [0:0]
-A OUTPUT -m comment --comment "switchyard image test" -j SWITCHYARD-TEST
-A SWITCHYARD-TEST -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -j REJECT
-A SWITCHYARD-TEST -m statistic --mode random --probability 0.5 -j ACCEPT
-A SWITCHYARD-TEST -m mark --mark 0x4000/0x4000 -j DROP
COMMIT
*nat
:SWITCHYARD-SVC - [0:0]
-A OUTPUT -p udp -m udp --dport 53 -j SWITCHYARD-SVC
-A SWITCHYARD-SVC -p udp -j DNAT --to-destination ` + ip + `
-A POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE --random-fully
COMMIT
`
}

const nftInput = `table ip switchyard-test {
	chain out {
		type nat hook output priority -100; policy accept;
		ip daddr 10.96.0.10 udp dport 53 ct state new dnat to 10.0.0.2:53
	}
}
`

// Every tool the agent runs starts from the image's rootfs, with only the
// libraries and extension modules the image holds, and nothing else is there.
func TestSwitchyardToolsRunFromTheImage(t *testing.T) {
	requireRoot(t)
	requireTools(t, "go", "apt-get", "apt-cache", "dpkg-deb")
	r := builtImage(t, "switchyard")
	t.Logf("%s %s: %d bytes compressed, %d uncompressed; %s", r.Ref, r.Digest, r.Compressed, r.Uncompressed, PackageList(r.Packages))
	root := rootfsOf(t, r)
	for _, tool := range agentTools() {
		if strings.HasPrefix(tool, "/etc/") {
			continue
		}
		runIn(t, root, false, "", tool, "--version")
	}
	if out := runIn(t, root, false, "", "/switchyard", "--help"); !strings.Contains(out, "Usage") {
		t.Errorf("/switchyard --help: %s", out)
	}
	for _, variant := range []string{"legacy", "nft"} {
		runIn(t, root, true, restoreInput("10.0.0.2:53"), "/usr/sbin/iptables-"+variant+"-restore")
		runIn(t, root, true, restoreInput("[fd00::2]:53"), "/usr/sbin/ip6tables-"+variant+"-restore")
	}
	runIn(t, root, true, nftInput, "/usr/sbin/nft", "-f", "-")
	for _, p := range []string{"/usr/bin/sh", "/usr/bin/bash", "/usr/bin/apt-get", "/usr/bin/dpkg", "/usr/bin/ls", "/usr/bin/cat"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("the image has %s", p)
		}
	}
	if fi, err := os.Lstat(filepath.Join(root, "/usr/sbin/iptables-nft-restore")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("iptables-nft-restore is not a symlink (to xtables-nft-multi): %v, %v", fi, err)
	}
}

// kube-proxy runs from its image, its unsuffixed iptables names are the nft
// variant, and its tools layer is switchyard's.
func TestKubeProxyImage(t *testing.T) {
	requireRoot(t)
	requireTools(t, "go", "apt-get", "apt-cache", "dpkg-deb")
	if _, err := os.Stat(filepath.Join(controlplane.BinDir(), "kube-proxy")); err != nil {
		requirePrereq(t, err)
	}
	r := builtImage(t, "kube-proxy")
	t.Logf("%s %s: %d bytes compressed, %d uncompressed", r.Ref, r.Digest, r.Compressed, r.Uncompressed)
	root := rootfsOf(t, r)
	if out := runIn(t, root, false, "", "/usr/local/bin/kube-proxy", "--version"); !strings.Contains(out, controlplane.Version) {
		t.Errorf("kube-proxy --version: %s", out)
	}
	for _, tool := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		if out := runIn(t, root, false, "", "/usr/sbin/"+tool, "--version"); !strings.Contains(out, "nf_tables") {
			t.Errorf("%s --version: %s, want the nf_tables variant", tool, out)
		}
	}
	runIn(t, root, false, "", "/usr/sbin/ipset", "--version")
	runIn(t, root, true, restoreInput("10.0.0.2:53"), "/usr/sbin/iptables-restore")
	if sw := builtImage(t, "switchyard"); sw.Layers[0].Digest != r.Layers[0].Digest {
		t.Errorf("tools layer: switchyard's %s, kube-proxy's %s: want one shared layer", sw.Layers[0].Digest, r.Layers[0].Digest)
	}
}
