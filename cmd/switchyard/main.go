// Command switchyard is the Switchyard agent: a kube-proxy replacement that runs on
// every node.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/dataplane"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "v0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit code: 2 for bad flags,
// config or arguments, 1 for any other failure.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts the shutdown (a sync in flight stops within
	// seconds); a second one ends the process at once, as without a handler.
	context.AfterFunc(ctx, stop)
	cmd := newRootCommand(stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "switchyard:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "switchyard",
		Short:         "Switchyard: the node-level Service dataplane that replaces kube-proxy",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	root.PersistentFlags().AddGoFlag(klogFlags.Lookup("v"))
	root.PersistentFlags().AddGoFlag(klogFlags.Lookup("vmodule"))
	root.AddCommand(newAgentCommand(stdout, stderr), newCleanupCommand(), newVersionCommand(stdout))
	return root
}

func newAgentCommand(stdout, stderr io.Writer) *cobra.Command {
	o := newOptions()
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Watch Services and EndpointSlices and program this node's dataplane",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.complete()
			if err != nil {
				return err
			}
			return runAgent(cmd.Context(), cfg, stdout, stderr)
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

func newCleanupCommand() *cobra.Command {
	portRange := "30000-32767"
	bpfRoot, procfs := defaultBPFRoot, defaultProcfs
	var drain time.Duration
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove everything any Switchyard dataplane installed on this node",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := dataplane.ParsePortRange(portRange)
			if err != nil {
				return flagErr("node-port-range", "%v", err)
			}
			if drain < 0 {
				return flagErr("drain-timeout", "must not be negative, got %s", drain)
			}
			return cleanup(bpfRoot, procfs, r, drain)
		},
	}
	cmd.Flags().StringVar(&portRange, "node-port-range", portRange, "The NodePort range the agent reserved, to release it.")
	cmd.Flags().StringVar(&bpfRoot, "bpf-root", bpfRoot, "Where the eBPF dataplane pinned its maps and links.")
	cmd.Flags().StringVar(&procfs, "procfs", procfs, procfsHelp)
	cmd.Flags().DurationVar(&drain, "drain-timeout", drain, "eBPF mode, in a rollback to kube-proxy once it has programmed the node: first let new connections from outside go to kube-proxy while the ones the tc programs carry finish, for up to this long (0: remove everything at once).")
	return cmd
}

func newVersionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintf(stdout, "switchyard %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %v", args)}
	}
	return nil
}
