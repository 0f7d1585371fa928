package cluster

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/switchyard/switchyard/test/controlplane"
	"github.com/switchyard/switchyard/test/topology"
)

// Options configure Start. The zero value is a one-node cluster with one external client and no
// images (then no pod can start: containerd needs the pause image, localhost/pause:dev).
type Options struct {
	// Nodes is 1 or 2 (the topology's node and remote node); default 1.
	Nodes int
	// ExternalClients is the number of hosts outside the cluster (0-9); default 1. Use -1 for none.
	ExternalClients int
	// Images are image archives (docker or OCI, as test/cmd/image writes them) imported into every
	// node's containerd (namespace k8s.io). One of them must be PauseImage.
	Images []string
	// PauseImage is containerd's sandbox image; default localhost/pause:dev.
	PauseImage string
	// BinDir holds etcd, kube-apiserver, kubelet, kube-controller-manager and kube-scheduler;
	// default controlplane.BinDir().
	BinDir string
	// StateRoot holds the run's state directory <StateRoot>/<prefix>; default
	// /var/tmp/switchyard-cluster. It must not be under /run, /var/lib or /var/log, which nodes see
	// as private directories of their own.
	StateRoot string
	// Prefix is the run prefix ("sy" and 6 hex digits); default random.
	Prefix string
	// ServiceCIDR and NodePortRange go to kube-apiserver (defaults of test/controlplane).
	ServiceCIDR, NodePortRange string
	// ExtraAPIServerArgs are appended to kube-apiserver's command line (--allow-privileged=true
	// is always there).
	ExtraAPIServerArgs []string
	// StartTimeout bounds Start; default 3 minutes.
	StartTimeout time.Duration
	// Logf, if set, gets a line for each step of Start and Close.
	Logf func(format string, args ...any)
}

// Addressing. Everything lives inside the run's namespaces, so concurrent runs do not collide.
const (
	// ClusterCIDR holds every node's pod subnet (10.244.<n>.0/24, n from 1).
	ClusterCIDR = "10.244.0.0/16"
	// NodeAPIServer is the API server's address inside every node's network namespace.
	NodeAPIServer = "https://127.0.0.1:6443"
	nodeAPIPort   = 6443

	defaultStateRoot  = "/var/tmp/switchyard-cluster"
	defaultPauseImage = "localhost/pause:dev"
	maxNodes          = 2
	maxClients        = 9
)

// Node is one node of the cluster.
type Node struct {
	// Name is the Kubernetes node name, also the name of its cgroup: <prefix>-node, <prefix>-remote.
	Name string
	// IP is the node IP, on the node's uplink (the Node's InternalIP).
	IP string
	// Netns is the node's network namespace name; NetnsPath its bind mount (for nsenter --net=).
	Netns, NetnsPath string
	// Cgroup is the node's cgroup v2 directory: every process of the node lives below it. Give it to
	// Switchyard's --cgroup-root.
	Cgroup string
	// CgroupRoot is kubelet's cgroupRoot, "/<prefix>-node" (the same name in every hierarchy).
	CgroupRoot string
	// PodCIDR is the node's pod subnet (also the Node's spec.podCIDR).
	PodCIDR string
	// Dir is the node's state directory (containerd, kubelet, CNI, pod logs).
	Dir string
	// HolderPID is the process whose mount and network namespaces are the node's.
	HolderPID int
	// ContainerdSocket is containerd's socket (for ctr -a, from the node's namespaces or the root one).
	ContainerdSocket string
}

// ExternalClient is a host outside the cluster: a network namespace on the nodes' segment, routed
// via the first node.
type ExternalClient struct {
	IP    string
	Netns string
}

// Timings are how long Start's phases took.
type Timings struct {
	// Infra is the topology and the control plane (built side by side).
	Infra time.Duration
	// NodesStarted is when every node's kubelet had started (images imported), from Start.
	NodesStarted time.Duration
	// NodesReady is when every node was Ready without the not-ready taint, from Start.
	NodesReady time.Duration
	// Total is Start's whole duration (the default ServiceAccount exists at its end).
	Total time.Duration
}

// Cluster is a running cluster. Its methods are safe for concurrent use.
type Cluster struct {
	opts    Options
	prefix  string
	dir     string
	topo    *topology.Topology
	cp      *controlplane.ControlPlane
	nodes   []*node
	clients []ExternalClient
	kcm     *proc
	sched   *proc
	nodeCfg string // kubeconfig for NodeAPIServer
	timings Timings

	closeOnce sync.Once
	closeErr  error
}

// Start builds the topology, starts the control plane, the controllers and the nodes, and returns
// once every node is Ready and the default ServiceAccount exists. On error nothing is left behind.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	t0 := time.Now()
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if err := Prerequisites(opts.BinDir); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	c := &Cluster{opts: opts, prefix: opts.Prefix}
	if c.prefix == "" {
		if c.prefix, err = topology.NewPrefix(); err != nil {
			return nil, err
		}
	}
	c.dir = filepath.Join(opts.StateRoot, c.prefix)
	if err := os.MkdirAll(opts.StateRoot, 0o755); err != nil {
		return nil, err
	}
	if err := os.Mkdir(c.dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := writeOwner(c.dir); err != nil {
		return nil, errors.Join(err, os.RemoveAll(c.dir))
	}
	register(c)
	defer func() {
		if err != nil {
			err = fmt.Errorf("start cluster %s: %w", c.prefix, err)
			if cerr := c.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup after the failed start: %w", cerr))
			}
		}
	}()
	c.logf("cluster %s: state in %s", c.prefix, c.dir)
	for _, d := range []string{"logs"} {
		if err := os.Mkdir(filepath.Join(c.dir, d), 0o755); err != nil {
			return nil, err
		}
	}

	if err := c.startInfra(ctx); err != nil {
		return nil, err
	}
	c.timings.Infra = time.Since(t0)
	c.logf("topology and control plane up after %v", c.timings.Infra.Round(time.Millisecond))
	if err := c.startControllers(); err != nil {
		return nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range c.nodes {
		g.Go(func() error { return c.startNode(gctx, n) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	c.timings.NodesStarted = time.Since(t0)
	c.logf("kubelets started after %v", c.timings.NodesStarted.Round(time.Millisecond))
	if err := c.waitNodes(ctx); err != nil {
		return nil, err
	}
	c.timings.NodesReady = time.Since(t0)
	c.logf("nodes Ready after %v", c.timings.NodesReady.Round(time.Millisecond))
	if err := c.waitServiceAccount(ctx, "default"); err != nil {
		return nil, err
	}
	c.timings.Total = time.Since(t0)
	c.logf("cluster %s ready after %v", c.prefix, c.timings.Total.Round(time.Millisecond))
	return c, nil
}

func (o *Options) defaults() error {
	if o.Nodes == 0 {
		o.Nodes = 1
	}
	if o.Nodes < 1 || o.Nodes > maxNodes {
		return fmt.Errorf("cluster: %d nodes: 1 or 2 are supported", o.Nodes)
	}
	switch {
	case o.ExternalClients == 0:
		o.ExternalClients = 1
	case o.ExternalClients < 0:
		o.ExternalClients = 0
	case o.ExternalClients > maxClients:
		return fmt.Errorf("cluster: %d external clients: at most %d", o.ExternalClients, maxClients)
	}
	if o.PauseImage == "" {
		o.PauseImage = defaultPauseImage
	}
	if o.BinDir == "" {
		o.BinDir = controlplane.BinDir()
	}
	if o.StateRoot == "" {
		o.StateRoot = defaultStateRoot
	}
	abs, err := filepath.Abs(o.StateRoot)
	if err != nil {
		return err
	}
	o.StateRoot = abs
	for _, p := range privateDirs {
		if abs == p || strings.HasPrefix(abs, p+"/") {
			return fmt.Errorf("cluster: state root %s is under %s, which nodes see as a private directory", abs, p)
		}
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 3 * time.Minute
	}
	for _, img := range o.Images {
		if _, err := os.Stat(img); err != nil {
			return fmt.Errorf("cluster: image archive: %w", err)
		}
	}
	return nil
}

// privateDirs are the directories every node's mount namespace replaces with its own (holderScript).
var privateDirs = []string{"/run", "/var/run", "/var/lib", "/var/log"}

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}

// startInfra builds the topology and starts the control plane side by side, then bridges the API
// server into every node's namespace.
func (c *Cluster) startInfra(ctx context.Context) error {
	sc := topology.Scenario{Prefix: c.prefix, Node: topology.Node{Name: c.nodeName(0), IPs: []string{nodeIP(0)}}}
	if c.opts.Nodes > 1 {
		sc.RemoteNode = topology.Node{Name: c.nodeName(1), IPs: []string{nodeIP(1)}}
	}
	for i := range c.opts.ExternalClients {
		sc.External = append(sc.External, topology.Client{IP: clientIP(i)})
	}
	var topo *topology.Topology
	var topoErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		topo, topoErr = topology.Build(ctx, sc)
	}()
	cp, cpErr := controlplane.Start(ctx, controlplane.Options{
		BinDir:             c.opts.BinDir,
		Dir:                filepath.Join(c.dir, "cp"),
		ServiceCIDR:        c.opts.ServiceCIDR,
		NodePortRange:      c.opts.NodePortRange,
		ExtraAPIServerArgs: append([]string{"--allow-privileged=true"}, c.opts.ExtraAPIServerArgs...),
	})
	<-done
	c.topo, c.cp = topo, cp
	if err := errors.Join(topoErr, cpErr); err != nil {
		return err
	}
	if err := topo.AssertIsolated(); err != nil {
		return err
	}
	for i := range c.opts.ExternalClients {
		ip := clientIP(i)
		c.clients = append(c.clients, ExternalClient{IP: ip, Netns: topo.ExternalNS(ip)})
	}
	var err error
	if c.nodeCfg, err = cp.KubeconfigFor(NodeAPIServer); err != nil {
		return err
	}
	for i := range c.opts.Nodes {
		n := &node{Node: Node{Name: c.nodeName(i), IP: nodeIP(i), PodCIDR: podCIDR(i)}}
		if i == 0 {
			n.Netns, n.Cgroup = topo.NodeNS(), topo.NodeCgroup()
		} else {
			n.Netns, n.Cgroup = topo.RemoteNS(), topo.RemoteCgroup()
		}
		n.NetnsPath = topology.NetnsPath(n.Netns)
		if filepath.Dir(n.Cgroup) != v2Mount {
			return fmt.Errorf("node cgroup %s is not directly under %s", n.Cgroup, v2Mount)
		}
		if filepath.Base(n.Cgroup) != n.Name {
			return fmt.Errorf("node %s: its cgroup is %s, not named after it", n.Name, n.Cgroup)
		}
		n.CgroupRoot = "/" + n.Name
		n.Dir = filepath.Join(c.dir, n.Name)
		n.ContainerdSocket = filepath.Join(n.Dir, "containerd", "containerd.sock")
		c.nodes = append(c.nodes, n)
		if _, err := cp.BridgeIntoNetns(n.NetnsPath, nodeAPIPort); err != nil {
			return err
		}
	}
	return c.routePodSubnets(ctx)
}

// routePodSubnets makes every node route the other nodes' pod subnets via their node IPs.
func (c *Cluster) routePodSubnets(ctx context.Context) error {
	for _, from := range c.nodes {
		for _, to := range c.nodes {
			if from == to {
				continue
			}
			if _, err := run(ctx, "ip", "-n", from.Netns, "route", "add", to.PodCIDR, "via", to.IP); err != nil {
				return err
			}
		}
	}
	return nil
}

// nodeName is the Kubernetes name of node i: the name of its cgroup (the topology's
// <prefix>-node and <prefix>-remote), so a DaemonSet can pass each agent its own node's
// cgroup v2 directory as --cgroup-root=/sys/fs/cgroup/unified/$(NODE_NAME).
func (c *Cluster) nodeName(i int) string {
	if i == 0 {
		return c.prefix + "-node"
	}
	return c.prefix + "-remote"
}

func nodeIP(i int) string   { return fmt.Sprintf("10.99.0.%d", 11+i) }
func podCIDR(i int) string  { return fmt.Sprintf("10.244.%d.0/24", i+1) }
func clientIP(i int) string { return fmt.Sprintf("203.0.113.%d", 10+i) }

// startControllers starts kube-controller-manager and kube-scheduler in the root namespace, with no
// listener (--secure-port=0), against the API server on 127.0.0.1.
func (c *Cluster) startControllers() error {
	ca := filepath.Join(c.dir, "ca.crt")
	if err := os.WriteFile(ca, caCerts(c.cp.CAData()), 0o644); err != nil {
		return err
	}
	// The control plane's service-account signing key: the token controller needs it.
	saKey := filepath.Join(c.cp.Dir(), "sa.key")
	if _, err := os.Stat(saKey); err != nil {
		return fmt.Errorf("the control plane's service-account key: %w", err)
	}
	var err error
	c.kcm, err = startProc("kube-controller-manager", c.logPath("kube-controller-manager"),
		command(filepath.Join(c.opts.BinDir, "kube-controller-manager"),
			"--kubeconfig="+c.cp.Kubeconfig(),
			"--secure-port=0",
			"--leader-elect=false",
			"--controllers=*",
			"--use-service-account-credentials=false",
			"--service-account-private-key-file="+saKey,
			"--root-ca-file="+ca,
			"--cluster-cidr="+ClusterCIDR,
			"--concurrent-deployment-syncs=10",
			"--concurrent-replicaset-syncs=10",
			"--concurrent-service-endpoint-syncs=10",
			"--endpointslice-updates-batch-period=0s",
			"--v=1",
		))
	if err != nil {
		return err
	}
	c.sched, err = startProc("kube-scheduler", c.logPath("kube-scheduler"),
		command(filepath.Join(c.opts.BinDir, "kube-scheduler"),
			"--kubeconfig="+c.cp.Kubeconfig(),
			"--secure-port=0",
			"--leader-elect=false",
			"--v=1",
		))
	return err
}

// caCerts keeps the CA certificates of a PEM bundle: the API server's self-signed bundle also holds
// its serving certificate, which kube-controller-manager's ClusterTrustBundle publisher refuses
// ("entry 0 does not have the CA bit set") when it comes through --root-ca-file.
func caCerts(bundle []byte) []byte {
	var out []byte
	for rest := bundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if cert, err := x509.ParseCertificate(b.Bytes); err == nil && b.Type == "CERTIFICATE" && cert.IsCA {
			out = append(out, pem.EncodeToMemory(b)...)
		}
	}
	if len(out) == 0 {
		return bundle
	}
	return out
}

func (c *Cluster) logPath(name string) string { return filepath.Join(c.dir, "logs", name+".log") }

// Prefix is the run prefix.
func (c *Cluster) Prefix() string { return c.prefix }

// Dir is the run's state directory.
func (c *Cluster) Dir() string { return c.dir }

// Client is a clientset for the API server (as admin, from the root namespace via 127.0.0.1).
func (c *Cluster) Client() kubernetes.Interface { return c.cp.Client() }

// RESTConfig returns a copy of the client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return c.cp.RESTConfig() }

// Kubeconfig is a kubeconfig for the root namespace (https://127.0.0.1:PORT, admin).
func (c *Cluster) Kubeconfig() string { return c.cp.Kubeconfig() }

// NodeKubeconfig is a kubeconfig (admin) for NodeAPIServer, for processes inside a node's
// namespaces: kubelet uses it, and so can a hostNetwork agent (mount it with a hostPath volume).
func (c *Cluster) NodeKubeconfig() string { return c.nodeCfg }

// ControlPlane is the underlying control plane.
func (c *Cluster) ControlPlane() *controlplane.ControlPlane { return c.cp }

// Topology is the underlying topology (its Command runs in a namespace without the node's mount
// namespace: prefer NodeCommand for the nodes).
func (c *Cluster) Topology() *topology.Topology { return c.topo }

// ServiceCIDR is the API server's --service-cluster-ip-range.
func (c *Cluster) ServiceCIDR() string {
	if c.opts.ServiceCIDR != "" {
		return c.opts.ServiceCIDR
	}
	return "172.30.0.0/16" // test/controlplane's default
}

// Nodes lists the nodes, <prefix>-node first.
func (c *Cluster) Nodes() []Node {
	out := make([]Node, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Node
	}
	return out
}

// Node returns the node with this name.
func (c *Cluster) Node(name string) (Node, bool) {
	if n := c.node(name); n != nil {
		return n.Node, true
	}
	return Node{}, false
}

func (c *Cluster) node(name string) *node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// ExternalClients lists the hosts outside the cluster.
func (c *Cluster) ExternalClients() []ExternalClient {
	return append([]ExternalClient(nil), c.clients...)
}

// Timings are how long Start's phases took.
func (c *Cluster) Timings() Timings { return c.timings }

// Logs lists the log files of the run: control plane, controllers, and per node the holder,
// containerd and kubelet.
func (c *Cluster) Logs() []string {
	var out []string
	if c.cp != nil {
		out = append(out, filepath.Join(c.cp.Dir(), "kube-apiserver.log"), filepath.Join(c.cp.Dir(), "etcd.log"))
	}
	for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
		out = append(out, c.logPath(name))
	}
	for _, n := range c.nodes {
		for _, d := range []string{"holder", "containerd", "kubelet"} {
			out = append(out, c.logPath(n.Name+"-"+d))
		}
	}
	return out
}
