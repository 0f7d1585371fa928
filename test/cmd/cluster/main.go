// Command cluster runs the test cluster of package test/cluster (a real control plane, controllers
// and one or two kubelet nodes inside network namespaces) by hand, as root:
//
//	go run ./test/cmd/cluster up [-nodes 1|2] [-images DIR] [-clients N]
//	go run ./test/cmd/cluster down [-all | -prefix PREFIX]
//
// up starts everything, prints the kubeconfig and how to reach the nodes, and stays in the
// foreground until SIGINT or SIGTERM, then tears everything down. (Ctrl-C reaches it under `go run`;
// a SIGTERM must go to the cluster process itself: `go run` dies of it without passing it on, and
// the cluster would run on until `down -all`.) -images DIR imports every
// DIR/*-image.tar (what `go run ./test/cmd/image -o DIR ...` writes) into each node's containerd.
//
// down removes what an `up` (or a test) that was killed left behind: by default the runs whose
// process is gone, with -all every run (running ones too), with -prefix one run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/test/cluster"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "up":
		os.Exit(up(os.Args[2:]))
	case "down":
		os.Exit(down(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: cluster up [-nodes 1|2] [-images DIR] [-clients N] [-state-root DIR]\n"+
		"       cluster down [-all | -prefix PREFIX] [-state-root DIR]")
	os.Exit(2)
}

func up(args []string) int {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	nodes := fs.Int("nodes", 1, "number of nodes (1 or 2)")
	clients := fs.Int("clients", 1, "number of external clients (0-9)")
	images := fs.String("images", "", "directory of image archives (*-image.tar) to import into every node")
	stateRoot := fs.String("state-root", cluster.DefaultStateRoot, "where the run keeps its state")
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		usage()
	}
	opts := cluster.Options{Nodes: *nodes, ExternalClients: *clients, StateRoot: *stateRoot,
		Logf: func(f string, a ...any) { fmt.Printf(f+"\n", a...) }}
	if *clients == 0 {
		opts.ExternalClients = -1
	}
	if *images != "" {
		found, err := filepath.Glob(filepath.Join(*images, "*-image.tar"))
		if err != nil || len(found) == 0 {
			fmt.Fprintf(os.Stderr, "cluster: no *-image.tar in %s\n", *images)
			return 1
		}
		sort.Strings(found)
		opts.Images = found
	}
	if err := cluster.Prerequisites(""); err != nil {
		fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
		return 1
	}
	printInfo(c)
	<-ctx.Done()
	stop()
	fmt.Println("stopping")
	if err := c.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "cluster: closing: %v\n", err)
		return 1
	}
	return 0
}

func printInfo(c *cluster.Cluster) {
	tm := c.Timings()
	fmt.Printf("\ncluster %s ready in %v (nodes Ready after %v)\n", c.Prefix(), tm.Total.Round(time.Millisecond),
		tm.NodesReady.Round(time.Millisecond))
	fmt.Printf("kubeconfig:       %s\n", c.Kubeconfig())
	fmt.Printf("  kubectl --kubeconfig=%s get nodes -o wide\n", c.Kubeconfig())
	fmt.Printf("node kubeconfig:  %s (%s, inside the nodes' namespaces)\n", c.NodeKubeconfig(), cluster.NodeAPIServer)
	fmt.Printf("state and logs:   %s\n", c.Dir())
	fmt.Printf("service CIDR:     %s, cluster CIDR %s\n", c.ServiceCIDR(), cluster.ClusterCIDR)
	for _, n := range c.Nodes() {
		fmt.Printf("node %s: IP %s, pods %s, netns %s, cgroup v2 %s (--cgroup-root), holder pid %d\n",
			n.Name, n.IP, n.PodCIDR, n.Netns, n.Cgroup, n.HolderPID)
		fmt.Printf("  shell on the node: nsenter -t %d -m -n bash\n", n.HolderPID)
		fmt.Printf("  its containers:    nsenter -t %d -m -n ctr -a %s -n k8s.io containers ls\n", n.HolderPID, n.ContainerdSocket)
	}
	for _, e := range c.ExternalClients() {
		fmt.Printf("external client %s: nsenter --net=/run/netns/%s bash\n", e.IP, e.Netns)
	}
	var logs []string
	for _, l := range c.Logs() {
		logs = append(logs, filepath.Base(l))
	}
	fmt.Printf("logs: %s\n", strings.Join(logs, " "))
	fmt.Println("Ctrl-C (SIGINT) or SIGTERM tears it down; `go run ./test/cmd/cluster down` cleans up after a killed run.")
}

func down(args []string) int {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	all := fs.Bool("all", false, "also remove clusters whose process still runs")
	prefix := fs.String("prefix", "", "remove only this run (e.g. sy1a2b3c)")
	stateRoot := fs.String("state-root", cluster.DefaultStateRoot, "where the runs keep their state")
	_ = fs.Parse(args)
	if fs.NArg() > 0 || (*all && *prefix != "") {
		usage()
	}
	removed, err := cluster.Down(*stateRoot, *all, *prefix)
	for _, r := range removed {
		fmt.Println("removed", r)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster down: %v\n", err)
		return 1
	}
	if len(removed) == 0 {
		fmt.Println("nothing to remove")
	}
	return 0
}
