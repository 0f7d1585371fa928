// Command image builds the project's OCI image archives without a registry or a
// container daemon (package test/image):
//
//	go run ./test/cmd/image -o bin switchyard     # bin/switchyard-image.tar, localhost/switchyard:dev
//	go run ./test/cmd/image -o bin all            # switchyard, kube-proxy, test and pause
//
// For each image it prints the reference, the manifest digest (what `ctr images
// ls` shows), the compressed and uncompressed sizes, the layers and the Debian
// packages (name=version) it holds. -compare builds more images only for the
// size table at the end: one that cannot be built there is a note, not an error.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/switchyard/switchyard/test/image"
)

func main() {
	out := flag.String("o", "bin", "directory for the <name>-image.tar archives")
	version := flag.String("version", "", "the switchyard binary's main.version (default: git describe --tags --always --dirty)")
	compare := flag.String("compare", "", "comma-separated images to build as well, for the size table only (e.g. kube-proxy)")
	quiet := flag.Bool("q", false, "no progress lines")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: image -o DIR [-version V] [-compare NAMES] [%s|all]...\n", strings.Join(image.Names(), "|"))
		flag.PrintDefaults()
	}
	flag.Parse()
	names, err := imageNames(flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts := image.Options{Version: *version}
	if !*quiet {
		opts.Log = os.Stderr
	}
	if err := run(ctx, image.NewBuilder(opts), *out, names, splitList(*compare)); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

// imageNames expands the arguments ("all", or names); none means switchyard.
func imageNames(args []string) ([]string, error) {
	if len(args) == 0 {
		return []string{"switchyard"}, nil
	}
	var names []string
	add := func(n string) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, a := range args {
		switch {
		case a == "all":
			for _, n := range image.Names() {
				add(n)
			}
		case image.Ref(a) != "":
			add(a)
		default:
			return nil, fmt.Errorf("no image %q", a)
		}
	}
	return names, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// run builds names (failing on the first error), then the -compare images
// (noting failures), and prints the size table of everything built.
func run(ctx context.Context, b *image.Builder, dir string, names, compare []string) error {
	var built []*image.Result
	for _, n := range names {
		res, err := b.Build(ctx, n, dir)
		if err != nil {
			return err
		}
		printResult(res)
		built = append(built, res)
	}
	for _, n := range compare {
		if slices.Contains(names, n) {
			continue
		}
		res, err := b.Build(ctx, n, dir)
		if err != nil {
			fmt.Printf("(%s: not built for comparison: %v)\n", n, err)
			continue
		}
		printResult(res)
		built = append(built, res)
	}
	printSizes(built)
	return nil
}

func printResult(r *image.Result) {
	fmt.Printf("%s\n  archive  %s\n  digest   %s\n  size     %s compressed, %s uncompressed\n",
		r.Ref, r.Path, r.Digest, mb(r.Compressed), mb(r.Uncompressed))
	for _, l := range r.Layers {
		fmt.Printf("  layer    %s  %9s gz %9s tar  %s\n", l.Digest.Hex[:12], mb(l.Compressed), mb(l.Uncompressed), l.Comment)
	}
	if len(r.Packages) > 0 {
		fmt.Printf("  debian   %s\n", image.PackageList(r.Packages))
	}
}

func printSizes(rs []*image.Result) {
	if len(rs) < 2 {
		return
	}
	fmt.Printf("\n%-32s %12s %14s\n", "image", "compressed", "uncompressed")
	for _, r := range rs {
		fmt.Printf("%-32s %12s %14s\n", r.Ref, mb(r.Compressed), mb(r.Uncompressed))
	}
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
