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
// With -handover, it runs the handover instead (test/e2e.Handover, docs/migrate.md):
// a cluster per kube-proxy mode given, taken over by each Switchyard overlay of
// -proxies under load, upgraded, rolled back; a table per step, and a PASS line for
// each step that lost nothing:
//
//	go run ./test/cmd/e2e -handover kube-proxy-nftables,kube-proxy-iptables -proxies ebpf [-settle 30s]
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
	handover := flag.String("handover", "", "comma-separated kube-proxy modes to hand over from (kube-proxy-nftables, kube-proxy-iptables), to each of -proxies, instead of the checks")
	settle := flag.Duration("settle", 30*time.Second, "with -handover: how long the load runs after each step")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var from []string
	if *handover != "" {
		from = strings.Split(*handover, ",")
	}
	passed, failed := run(ctx, strings.Split(*proxies, ","), from, *settle, *short, *images, *verbose)
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 || passed == 0 {
		os.Exit(1)
	}
}

func run(ctx context.Context, proxies, from []string, settle time.Duration, short bool, imageDir string, verbose bool) (passed, failed int) {
	logf := func(format string, args ...any) { fmt.Printf("# "+format+"\n", args...) }
	quiet := func(string, ...any) {}
	repo, archives, bins, cleanup, err := prepare(imageDir, append(slices.Clone(proxies), from...))
	defer cleanup()
	if err != nil {
		fmt.Printf("FAIL setup: %v\n", err)
		return 0, 1
	}
	if err := cluster.Prerequisites(""); err != nil {
		fmt.Printf("FAIL setup: %v\n", err)
		return 0, 1
	}
	report := func(r e2e.Result) {
		if r.Err != nil {
			fmt.Printf("FAIL %s (%s): %v\n", r.Name, r.Took.Round(time.Millisecond), r.Err)
			failed++
			return
		}
		fmt.Printf("PASS %s (%s)\n", r.Name, r.Took.Round(time.Millisecond))
		passed++
	}
	for _, name := range proxies {
		o := e2e.Options{Proxy: name, Repo: repo, Images: archives, Probe: bins["probe"], Loadgen: bins["loadgen"], Short: short, Logf: logf, Report: report}
		if !verbose {
			o.Logf = quiet
		}
		if len(from) > 0 {
			for _, f := range from {
				handover(ctx, e2e.HandoverOptions{Options: o, From: f, Settle: settle}, report)
			}
			continue
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

// handover runs one handover and reports each step with its table.
func handover(ctx context.Context, o e2e.HandoverOptions, report func(e2e.Result)) {
	name := o.From + "->" + o.Proxy
	t0 := time.Now()
	steps, err := e2e.Handover(ctx, o)
	for _, s := range steps {
		fmt.Printf("\n## %s: %s (action %s, then %s of load)\n", name, s.Name, s.Action.Round(100*time.Millisecond), o.Settle)
		if len(s.Events) > 0 {
			fmt.Printf("%s\n", strings.Join(s.Events, ", "))
		}
		fmt.Print(s.Table())
		r := e2e.Result{Name: "handover/" + name + "/" + s.Name, Err: s.Failed(), Took: s.Action}
		if r.Err != nil {
			fmt.Printf("# proxies' logs and conntrack's counters at the step's end:\n%s", s.Logs)
		}
		report(r)
	}
	if err != nil {
		report(e2e.Result{Name: "handover/" + name + "/setup", Err: err, Took: time.Since(t0)})
	}
	fmt.Printf("# %s: %s\n", name, time.Since(t0).Round(time.Second))
}

// prepare finds the repository and the image archives the proxies need, and builds
// the clients run inside the namespaces (probe, loadgen).
func prepare(imageDir string, proxies []string) (repo string, archives []string, bins map[string]string, cleanup func(), err error) {
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
	bins = map[string]string{}
	for _, name := range []string{"probe", "loadgen"} {
		bins[name] = filepath.Join(tmp, name)
		cmd := exec.Command("go", "build", "-o", bins[name], "./test/cmd/"+name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("building %s: %w: %s", name, berr, out)
			return
		}
	}
	return
}
