// Command e2e installs a proxy on a real two-node test cluster through the API
// server, one cluster per proxy, and checks Services with real connections (package
// test/e2e): Switchyard from deploy/overlays (ebpf, iptables), or upstream kube-proxy
// from its image as kubeadm deploys it (kube-proxy-nftables, kube-proxy-iptables),
// which the same checks hold for. Run it from the repository's root, as root, after
// building the images:
//
//	go run ./test/cmd/image -o bin switchyard test pause [kube-proxy]
//	go run ./test/cmd/e2e [-proxies ebpf,iptables] [-short] [-images bin]
//
// It prints a line per check and, last, "N passed, M failed"; the exit status is 1
// when a check failed or a cluster could not be set up.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/cluster"
	"github.com/switchyard/switchyard/test/e2e"
	"github.com/switchyard/switchyard/test/image"
)

func main() {
	proxies := flag.String("proxies", "ebpf,iptables", "comma-separated proxies to install, one cluster each: "+strings.Join(e2e.Proxies(), ", "))
	short := flag.Bool("short", false, "one check of each kind (make test's form)")
	images := flag.String("images", "bin", "directory holding the <name>-image.tar archives (test/cmd/image): switchyard, test, pause, and kube-proxy for its runs")
	verbose := flag.Bool("v", false, "log the cluster's steps")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	passed, failed := run(ctx, strings.Split(*proxies, ","), *short, *images, *verbose)
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 || passed == 0 {
		os.Exit(1)
	}
}

func run(ctx context.Context, proxies []string, short bool, imageDir string, verbose bool) (passed, failed int) {
	logf := func(format string, args ...any) { fmt.Printf("# "+format+"\n", args...) }
	quiet := func(string, ...any) {}
	repo, archives, probe, cleanup, err := prepare(imageDir, proxies)
	defer cleanup()
	if err != nil {
		fmt.Printf("FAIL setup: %v\n", err)
		return 0, 1
	}
	if err := cluster.Prerequisites(""); err != nil {
		fmt.Printf("FAIL setup: %v\n", err)
		return 0, 1
	}
	for _, name := range proxies {
		o := e2e.Options{Proxy: name, Repo: repo, Images: archives, Probe: probe, Short: short, Logf: logf,
			Report: func(r e2e.Result) {
				if r.Err != nil {
					fmt.Printf("FAIL %s (%s): %v\n", r.Name, r.Took.Round(time.Millisecond), r.Err)
					failed++
					return
				}
				fmt.Printf("PASS %s (%s)\n", r.Name, r.Took.Round(time.Millisecond))
				passed++
			}}
		if !verbose {
			o.Logf = quiet
		}
		t0 := time.Now()
		if _, err := e2e.Run(ctx, o); err != nil {
			fmt.Printf("FAIL %s/setup: %v\n", name, err)
			failed++
		}
		logf("%s: %s", name, time.Since(t0).Round(time.Second))
	}
	return passed, failed
}

// prepare finds the repository and the image archives the proxies need, and builds
// the probe client.
func prepare(imageDir string, proxies []string) (repo string, archives []string, probe string, cleanup func(), err error) {
	cleanup = func() {}
	if repo, err = os.Getwd(); err != nil {
		return
	}
	if _, err = os.Stat(filepath.Join(repo, "deploy", "overlays")); err != nil {
		err = fmt.Errorf("run from the repository's root: %w", err)
		return
	}
	names := []string{"switchyard", "test", "pause"}
	for _, p := range proxies {
		if strings.HasPrefix(p, "kube-proxy") && !slices.Contains(names, "kube-proxy") {
			names = append(names, "kube-proxy")
		}
	}
	for _, name := range names {
		p := filepath.Join(imageDir, image.ArchiveName(name))
		if _, err = os.Stat(p); err != nil {
			err = fmt.Errorf("%w (build it with `go run ./test/cmd/image -o %s %s`)", err, imageDir, name)
			return
		}
		archives = append(archives, p)
	}
	tmp, err := os.MkdirTemp("", "switchyard-e2e-")
	if err != nil {
		return
	}
	cleanup = func() { os.RemoveAll(tmp) }
	probe = filepath.Join(tmp, "probe")
	cmd := exec.Command("go", "build", "-o", probe, "./test/cmd/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, berr := cmd.CombinedOutput(); berr != nil {
		err = fmt.Errorf("building the probe: %w: %s", berr, out)
	}
	return
}
