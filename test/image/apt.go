package image

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// Package is one Debian package a build used, as apt resolved it.
type Package struct {
	Name    string
	Version string
	Arch    string // "amd64", or "all" for data-only packages such as netbase
	SHA256  string // of the .deb, from the archive's Packages index
	Depends []string
	Path    string // the downloaded .deb (set by Fetch)
}

// String is the package=version form apt-get takes and the image label records.
func (p Package) String() string { return p.Name + "=" + p.Version }

// fileName is the name `apt-get download` gives the .deb: the epoch's colon is
// escaped as %3a.
func (p Package) fileName() string {
	return p.Name + "_" + strings.ReplaceAll(p.Version, ":", "%3a") + "_" + p.Arch + ".deb"
}

// resolvePackages returns the seeds and, transitively, every package named
// "lib*" they depend on (first alternative of each dependency), sorted by name.
// Only library packages are followed: they are where the shared libraries the
// ELF closure needs live, while following everything would drag in dpkg, perl
// and debconf. A seed or library apt does not know is an error naming it.
func resolvePackages(ctx context.Context, seeds []string) ([]Package, error) {
	found := map[string]Package{}
	next := slices.Clone(seeds)
	for len(next) > 0 {
		pkgs, err := aptShow(ctx, next)
		if err != nil {
			return nil, err
		}
		next = nil
		for _, p := range pkgs {
			found[p.Name] = p
			for _, d := range p.Depends {
				if _, ok := found[d]; !ok && strings.HasPrefix(d, "lib") && !slices.Contains(next, d) {
					next = append(next, d)
				}
			}
		}
	}
	out := make([]Package, 0, len(found))
	for _, p := range found {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Package) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// aptShow asks apt for the candidate version of each named package.
func aptShow(ctx context.Context, names []string) ([]Package, error) {
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return nil, fmt.Errorf("debian packages: no apt-cache (this builder needs a Debian host with apt): %w", err)
	}
	args := append([]string{"show", "--no-all-versions"}, names...)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "apt-cache", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	pkgs, err := parseAptShow(stdout.Bytes())
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if !slices.ContainsFunc(pkgs, func(p Package) bool { return p.Name == n }) {
			return nil, fmt.Errorf("debian package %q: apt knows no such package (apt-get update? a bookworm "+
				"sources list?)%s", n, aptSaid(runErr, stderr.String()))
		}
	}
	return pkgs, nil
}

// aptSaid is what apt-cache reported, if anything (it exits 0 when only some
// of the packages asked for are missing).
func aptSaid(err error, stderr string) string {
	stderr = strings.TrimSpace(stderr)
	switch {
	case err != nil && stderr != "":
		return fmt.Sprintf(": apt-cache show: %v: %s", err, stderr)
	case err != nil:
		return fmt.Sprintf(": apt-cache show: %v", err)
	case stderr != "":
		return ": apt-cache show: " + stderr
	}
	return ""
}

// parseAptShow reads apt-cache show's stanzas (RFC 822 style, blank-line separated).
func parseAptShow(out []byte) ([]Package, error) {
	var pkgs []Package
	for _, stanza := range bytes.Split(out, []byte("\n\n")) {
		fields := stanzaFields(stanza)
		if fields["Package"] == "" {
			continue
		}
		p := Package{Name: fields["Package"], Version: fields["Version"], Arch: fields["Architecture"], SHA256: fields["SHA256"]}
		if p.Version == "" || p.Arch == "" || p.SHA256 == "" {
			return nil, fmt.Errorf("apt-cache show %s: no Version, Architecture or SHA256 field", p.Name)
		}
		p.Depends = append(dependencyNames(fields["Pre-Depends"]), dependencyNames(fields["Depends"])...)
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// stanzaFields maps a stanza's field names to their (first-line) values;
// continuation lines (the long description) are dropped.
func stanzaFields(stanza []byte) map[string]string {
	fields := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(stanza))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}

// dependencyNames turns "libc6 (>= 2.34), libfoo1 | libbar1, x:any" into
// [libc6 libfoo1 x]: the first alternative, without version or architecture.
func dependencyNames(field string) []string {
	var out []string
	for _, dep := range strings.Split(field, ",") {
		alt, _, _ := strings.Cut(dep, "|")
		name := strings.Fields(alt)
		if len(name) == 0 {
			continue
		}
		n, _, _ := strings.Cut(name[0], ":")
		out = append(out, n)
	}
	return out
}
