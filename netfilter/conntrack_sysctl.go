package netfilter

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// (This sits with the conntrack code as in kube-proxy, whose conntrack package owns its sysctls.)

// SysctlRouteLocalnet lets packets to 127.0.0.0/8 be DNATed to a pod: kube-proxy's iptables mode
// sets it to 1 for NodePorts on localhost (--localhost-nodeports), and so does Switchyard's.
const SysctlRouteLocalnet = "net/ipv4/conf/all/route_localnet"

// Sysctl reads and writes kernel parameters, named as paths under /proc/sys
// ("net/ipv4/conf/all/route_localnet"; the dotted form works too when no part has a dot).
type Sysctl interface {
	Get(name string) (string, error)
	Set(name, value string) error
}

// ProcSysctl is the real Sysctl. Values under /proc/sys/net belong to the network namespace of the
// thread that opens the file: the agent's own, on any of its threads.
type ProcSysctl struct {
	// Root is the sysctl tree; empty means /proc/sys.
	Root string
}

func (p ProcSysctl) path(name string) (string, error) {
	if !strings.Contains(name, "/") {
		name = strings.ReplaceAll(name, ".", "/")
	}
	clean := filepath.Clean(name)
	if clean == "." || filepath.IsAbs(clean) || strings.HasPrefix(clean, "..") {
		return "", fmt.Errorf("sysctl: bad name %q", name)
	}
	root := p.Root
	if root == "" {
		root = "/proc/sys"
	}
	return filepath.Join(root, clean), nil
}

func (p ProcSysctl) Get(name string) (string, error) {
	path, err := p.path(name)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("sysctl: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Set writes value; the file exists already (sysctls are never created), so no O_CREATE.
func (p ProcSysctl) Set(name, value string) error {
	path, err := p.path(name)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("sysctl: %w", err)
	}
	_, werr := f.WriteString(value + "\n")
	cerr := f.Close()
	if werr != nil || cerr != nil {
		return fmt.Errorf("sysctl: write %s=%s: %w", name, value, firstErr(werr, cerr))
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// EnsureSysctl sets name to value unless it already has it (a write costs nothing, but a node
// administrator's tooling may watch for changes), and says whether it wrote.
func EnsureSysctl(s Sysctl, name, value string) (changed bool, err error) {
	cur, err := s.Get(name)
	if err != nil {
		return false, err
	}
	if cur == value {
		return false, nil
	}
	return true, s.Set(name, value)
}
