package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// fetchPackages makes sure every package's .deb is in dir, with the SHA256 the
// Packages index gives, and sets each Path. Missing ones are downloaded with
// `apt-get download name=version` (one call) into a temporary directory and
// renamed into place, so two builds at once never see a half-written .deb.
func fetchPackages(ctx context.Context, dir string, pkgs []Package) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("debian package cache: %w", err)
	}
	var missing []string
	for i := range pkgs {
		pkgs[i].Path = filepath.Join(dir, pkgs[i].fileName())
		if err := checkDeb(pkgs[i]); err != nil {
			missing = append(missing, pkgs[i].String())
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := aptDownload(ctx, dir, missing); err != nil {
		return err
	}
	var errs []error
	for _, p := range pkgs {
		errs = append(errs, checkDeb(p))
	}
	return errors.Join(errs...)
}

// aptDownload runs apt-get download in a temporary directory under dir and moves
// the .debs it fetched into dir.
func aptDownload(ctx context.Context, dir string, specs []string) error {
	tmp, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		return fmt.Errorf("debian package cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	// apt drops to the _apt user to download, which cannot write to root's home:
	// as root, download as root rather than be warned about it on every run.
	args := []string{"download"}
	if os.Geteuid() == 0 {
		args = append(args, "-o", "APT::Sandbox::User=root")
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "apt-get", append(args, specs...)...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = tmp, io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("apt-get download %s: %w: %s", strings.Join(specs, " "), err, strings.TrimSpace(stderr.String()))
	}
	debs, err := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if err != nil {
		return err
	}
	for _, f := range debs {
		if err := os.Rename(f, filepath.Join(dir, filepath.Base(f))); err != nil {
			return fmt.Errorf("debian package cache: %w", err)
		}
	}
	return nil
}

// checkDeb verifies the cached .deb against the index's SHA256: a truncated or
// replaced file is fetched again instead of silently changing the image.
func checkDeb(p Package) error {
	f, err := os.Open(p.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("debian package %s: apt-get download left no %s", p, p.Path)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("debian package %s: %w", p, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.SHA256 {
		return fmt.Errorf("debian package %s: %s has sha256 %s, the index says %s", p, p.Path, got, p.SHA256)
	}
	return nil
}
