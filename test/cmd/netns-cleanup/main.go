// Command netns-cleanup removes the network namespaces, cgroups and processes that test topologies
// (package test/topology) left behind when their run was killed:
//
//	netns-cleanup            runs whose owner process is gone (safe while other tests run)
//	netns-cleanup -all       everything carrying the package's marker, runs in progress included
//	netns-cleanup -prefix P  one run (P is the run prefix, e.g. sy1a2b3c)
//
// It prints one line per removed namespace or cgroup.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/switchyard/switchyard/test/topology"
)

func main() {
	all := flag.Bool("all", false, "also remove topologies of runs still in progress")
	prefix := flag.String("prefix", "", "remove only this run's topology")
	flag.Parse()
	if flag.NArg() > 0 || *all && *prefix != "" {
		fmt.Fprintln(os.Stderr, "usage: netns-cleanup [-all | -prefix PREFIX]")
		os.Exit(2)
	}
	var removed []string
	var err error
	if *prefix != "" {
		removed, err = topology.CleanupPrefix(*prefix + "-")
	} else {
		removed, err = topology.Cleanup(*all)
	}
	for _, r := range removed {
		fmt.Println("removed", r)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netns-cleanup:", err)
		os.Exit(1)
	}
	if len(removed) == 0 {
		fmt.Println("nothing to remove")
	}
}
