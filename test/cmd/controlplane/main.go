// Command controlplane runs the test control plane (etcd and kube-apiserver on
// 127.0.0.1, see test/controlplane) until SIGINT or SIGTERM, for trying things by
// hand:
//
//	go run ./test/cmd/controlplane &
//	kubectl --kubeconfig=<printed path> get ns
//
// The binaries come from `make controlplane`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/controlplane"
)

func main() {
	var opts controlplane.Options
	flag.StringVar(&opts.BinDir, "bin-dir", controlplane.BinDir(), "directory with etcd and kube-apiserver")
	flag.StringVar(&opts.Dir, "dir", "", "work directory, kept afterwards (default: a temporary directory, removed)")
	flag.StringVar(&opts.ServiceCIDR, "service-cidr", "172.30.0.0/16", "--service-cluster-ip-range")
	flag.StringVar(&opts.NodePortRange, "node-port-range", "30000-32767", "--service-node-port-range")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "controlplane: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	cp, err := controlplane.Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("kube-apiserver %s ready in %s\n", controlplane.Version, time.Since(start).Round(time.Millisecond))
	fmt.Printf("kubeconfig: %s\n", cp.Kubeconfig())
	fmt.Printf("url:        %s\n", cp.URL())
	fmt.Printf("token:      %s\n", cp.Token())
	fmt.Printf("logs:       %s\n", cp.Dir())
	fmt.Println("Ctrl-C (SIGINT) or SIGTERM stops it.")

	<-ctx.Done()
	stop()
	fmt.Println("stopping")
	if err := cp.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: stopping: %v\n", err)
		os.Exit(1)
	}
}
