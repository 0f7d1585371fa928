package topology

import (
	"fmt"
	"net/netip"
	"os/exec"
	"sync"
)

// Topology is a built scenario. Its methods are safe for concurrent use.
type Topology struct {
	// Scenario is what was built, with the Prefix filled in.
	Scenario Scenario

	plan      *plan
	mount     string
	rootLinks []string // link names of the caller's namespace before Build, for AssertIsolated

	mu       sync.Mutex
	netns    []string           // created namespaces, in creation order
	cgroups  map[string]*cgroup // by role: node, remote, ext
	nsCgroup map[string]*cgroup // netns name -> cgroup its processes are born in
	procs    []*exec.Cmd        // started processes, killed and reaped by Close
	servers  map[string][]*exec.Cmd
	closed   bool
}

// Role names, shared by namespaces ("<prefix>-<role>") and cgroups.
const (
	roleLan    = "lan"
	roleNode   = "node"
	roleRemote = "remote"
	roleExt    = "ext"
)

// Interface names: the prefix and a short role; the lan ends of the veths start with "l".
const (
	ifBridge     = "br"
	ifNodeUplink = "n"
	ifRemUplink  = "r"
	ifPodHost    = "p"  // + pod index
	ifClientLan  = "lx" // + client index
	ifInside     = "eth0"
	hostVethMAC  = "ee:ee:ee:ee:ee:ee"
	podGateway4  = "169.254.1.1"
	podGateway6  = "fe80::1"
)

func (t *Topology) name(role string) string  { return t.Scenario.Prefix + "-" + role }
func (t *Topology) iface(role string) string { return t.Scenario.Prefix + role }

// Prefix is the run prefix.
func (t *Topology) Prefix() string { return t.Scenario.Prefix }

// NodeNS is the node under test's network namespace name (see NetnsPath).
func (t *Topology) NodeNS() string { return t.name(roleNode) }

// RemoteNS is the remote node's namespace name, or "" when the scenario has no remote node.
func (t *Topology) RemoteNS() string {
	if !t.plan.hasRemote() {
		return ""
	}
	return t.name(roleRemote)
}

// LanNS is the namespace holding the outside bridge and the default gateways.
func (t *Topology) LanNS() string { return t.name(roleLan) }

// PodNS is a pod's namespace name, or "" for an unknown pod.
func (t *Topology) PodNS(pod string) string {
	if t.podIndex(pod) < 0 {
		return ""
	}
	return t.name("pod-" + pod)
}

// ExternalNS is the namespace of the external client with this IP, or "" if there is none.
func (t *Topology) ExternalNS(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	for i, c := range t.plan.clients {
		if c == a {
			return t.name(fmt.Sprintf("%s%d", roleExt, i))
		}
	}
	return ""
}

// Namespaces lists the namespaces the topology created.
func (t *Topology) Namespaces() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.netns...)
}

// NodeCgroup is the node under test's cgroup v2 directory: attach cgroup eBPF programs here.
func (t *Topology) NodeCgroup() string { return t.cgroupPath(roleNode) }

// RemoteCgroup is the remote node's cgroup directory, or "".
func (t *Topology) RemoteCgroup() string { return t.cgroupPath(roleRemote) }

func (t *Topology) cgroupPath(role string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cg := t.cgroups[role]; cg != nil {
		return cg.path
	}
	return ""
}

// NodeUplink is the node's interface towards the outside segment (it carries the node IPs).
func (t *Topology) NodeUplink() string { return t.iface(ifNodeUplink) }

// PodHostIface is the node-side veth of a pod (in the namespace of the node hosting it), or "".
func (t *Topology) PodHostIface(pod string) string {
	i := t.podIndex(pod)
	if i < 0 {
		return ""
	}
	return t.iface(fmt.Sprintf("%s%d", ifPodHost, i))
}

// Gateways are the node's default gateways (owned by the lan namespace, which forwards nothing).
func (t *Topology) Gateways() []string {
	var out []string
	for _, g := range t.plan.gateways {
		out = append(out, g.Addr().String())
	}
	return out
}

// ServerPIDs are the pids of the echo servers of a pod.
func (t *Topology) ServerPIDs(pod string) []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	var pids []int
	for _, c := range t.servers[pod] {
		pids = append(pids, c.Process.Pid)
	}
	return pids
}

func (t *Topology) podIndex(name string) int {
	for i, p := range t.Scenario.Pods {
		if p.Name == name {
			return i
		}
	}
	return -1
}

// podHostNS is the namespace of the node a pod runs on.
func (t *Topology) podHostNS(i int) string {
	if t.Scenario.Pods[i].Local {
		return t.NodeNS()
	}
	return t.name(roleRemote)
}

func (p *plan) hasRemote() bool {
	if len(p.remote) > 0 {
		return true
	}
	for _, pod := range p.s.Pods {
		if !pod.Local {
			return true
		}
	}
	return false
}
