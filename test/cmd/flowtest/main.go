// Command flowtest runs flow files against a proxy in simulated nodes:
//
//	go run ./test/cmd/flowtest --proxy=kube-proxy-nftables test/flows/*.json
//
// It prints one line per flow and, last, "N passed, M failed, K skipped"; a case
// that cannot be set up (an object the API server refuses, say) is one ERROR line,
// counted as failed, and the run goes on. It exits 1 when a flow or case failed
// and 2 when the harness could not run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"

	"github.com/switchyard/switchyard/test/controlplane"
	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/flowrun"
	"github.com/switchyard/switchyard/test/topology"
)

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "flowtest:", err)
	}
	os.Exit(code)
}

func run() (int, error) {
	proxy := flag.String("proxy", "", "the proxy under test: "+strings.Join(flowrun.Proxies, ", "))
	source := flag.String("source", "apiserver", "apiserver (publish to a real API server) or file (Switchyard only)")
	runRE := flag.String("run", "", "only cases or flows whose name matches this regular expression")
	jsonOut := flag.String("json", "", "write a machine-readable report here")
	keep := flag.Bool("keep", false, "leave the first case's topology up (clean up later with netns-cleanup)")
	flag.Parse()

	o := flowrun.Options{Proxy: *proxy, Source: *source, Keep: *keep, Out: os.Stdout}
	if !slices.Contains(flowrun.Proxies, o.Proxy) {
		return 2, fmt.Errorf("--proxy: want one of %s", strings.Join(flowrun.Proxies, ", "))
	}
	if o.Source != "apiserver" && o.Source != "file" {
		return 2, fmt.Errorf("--source: want apiserver or file")
	}
	if o.Source == "file" && strings.HasPrefix(o.Proxy, "kube-proxy-") {
		return 2, fmt.Errorf("--source=file: upstream kube-proxy only reads an API server")
	}
	if *runRE != "" {
		re, err := regexp.Compile(*runRE)
		if err != nil {
			return 2, fmt.Errorf("--run: %w", err)
		}
		o.Run = re
	}
	cases, err := flow.Load(flag.Args()...)
	if err != nil {
		return 2, err
	}
	if len(cases) == 0 {
		return 2, errors.New("no flow files given")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := runCases(ctx, o, cases)
	if rep != nil {
		fmt.Println(rep.Summary())
		if *jsonOut != "" {
			if werr := writeJSON(*jsonOut, rep); werr != nil {
				return 2, werr
			}
		}
	}
	if err != nil {
		return 2, err
	}
	if rep.Failed > 0 {
		return 1, nil
	}
	if rep.Passed == 0 {
		return 1, errors.New("no flow ran (every case skipped, or --run matched none)")
	}
	return 0, nil
}

// runCases prepares what the proxy needs (helper binaries, the control plane)
// and runs the cases.
func runCases(ctx context.Context, o flowrun.Options, cases []flow.Case) (*flowrun.Report, error) {
	if err := topology.Prerequisites(); err != nil {
		return nil, err
	}
	// Leftovers of runs that were killed (their owner process is gone).
	removed, err := topology.Cleanup(false)
	if err != nil {
		return nil, err
	}
	for _, r := range removed {
		fmt.Fprintln(os.Stderr, "flowtest: removed leftover", r)
	}
	tmp, err := os.MkdirTemp("", "flowtest-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if o.EchoBin, o.ProbeBin, err = topology.BuildBinaries(ctx, tmp); err != nil {
		return nil, err
	}
	if strings.HasPrefix(o.Proxy, "switchyard-") {
		if o.SwitchyardBin, err = flowrun.BuildAgent(ctx, tmp); err != nil {
			return nil, err
		}
	}
	if o.Source == "apiserver" {
		bin := controlplane.BinDir()
		if missing := controlplane.Missing(bin); len(missing) > 0 {
			return nil, fmt.Errorf("control-plane binaries missing in %s (%s): run `make controlplane`", bin, strings.Join(missing, ", "))
		}
		o.KubeProxyBin = filepath.Join(bin, "kube-proxy")
		cidrs, err := flow.ServiceCIDRs(cases)
		if err != nil {
			return nil, err
		}
		cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: bin, ServiceCIDR: strings.Join(cidrs, ",")})
		if err != nil {
			return nil, err
		}
		defer func() {
			if err := cp.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "flowtest: stopping the control plane:", err)
			}
		}()
		o.API = cp
	}
	return flowrun.Run(ctx, o, cases)
}

func writeJSON(path string, rep *flowrun.Report) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
