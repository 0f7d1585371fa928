package cluster

import (
	"fmt"
	"strings"
)

// containerdConfig is containerd 1.6's configuration for one node: everything under the node's state
// directory, runc's state included. root lacks CAP_SYS_RESOURCE on these machines, so a negative
// oom_score_adj is refused: restrict_oom_score_adj keeps runc from trying.
func containerdConfig(dir, runc, pauseImage string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = %[7]q
        Root = %[8]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[9]q
    conf_dir = %[10]q
    max_conf_num = 1
`, dir+"/containerd/root", dir+"/containerd/state", dir+"/containerd/containerd.sock",
		dir+"/containerd/containerd.sock.ttrpc", dir+"/containerd/opt", pauseImage, runc, dir+"/runc",
		cniBinDir, dir+"/cni/net.d")
}

// cniConfig is the node's pod network: a bridge in the node's namespace that is the pods' gateway,
// with host-local addresses from the node's pod subnet. No masquerade: routes between the nodes'
// subnets go via the node IPs.
func cniConfig(dir, podCIDR string) string {
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "switchyard-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    }
  ]
}
`, podCIDR, dir+"/cni/ipam")
}

// kubeletConfig is the node's KubeletConfiguration. protectKernelDefaults makes kubelet check the
// kernel tunables instead of writing them: the holder shows it the values it wants (see holderScript),
// so a tunable missed there fails kubelet's start rather than changing the host.
func kubeletConfig(dir, nodeIP, cgroupRoot string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[3]s
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
protectKernelDefaults: true
failSwapOn: false
containerRuntimeEndpoint: unix://%[1]s/containerd/containerd.sock
imageServiceEndpoint: unix://%[1]s/containerd/containerd.sock
podLogsDir: %[1]s/pod-logs
address: %[2]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
resolvConf: ""
clusterDomain: cluster.local
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
`, dir, nodeIP, cgroupRoot)
}

// kernelTunables are the values kubelet's setupKernelTunables wants (pkg/kubelet/cm), faked inside
// each node's mount namespace.
var kernelTunables = [][2]string{
	{"vm/overcommit_memory", "1"},
	{"vm/panic_on_oom", "0"},
	{"kernel/panic", "10"},
	{"kernel/panic_on_oops", "1"},
	{"kernel/keys/root_maxkeys", "1000000"},
	{"kernel/keys/root_maxbytes", "25000000"},
}

// holderScript runs as the holder of a node's mount namespace (a private one, propagation slave,
// inside the node's network namespace) and then sleeps. It gives the node what a real node has and
// keeps the host out of reach of what runs there:
//   - a fresh sysfs (the netns's own /sys/class/net) with the host's cgroup mounts moved back on it,
//   - its own bpffs at /sys/fs/bpf, as systemd mounts one on a real node (pins vanish with the node),
//   - private /run, /var/lib and /var/log (shim sockets, the CNI cache, /var/log/containers links),
//   - kubelet's kernel tunables as plain files bind-mounted over /proc/sys (the host keeps its own),
//   - every mount shared within the node, as on a real node (and still a slave of the host's).
func holderScript(dir string) string {
	var b strings.Builder
	q := shellQuote
	fmt.Fprintf(&b, "set -eu\n")
	fmt.Fprintf(&b, "mkdir -p %s %s %s %s %s\n", q(dir+"/cgmove"), q(dir+"/fake"), q(dir+"/private/run"),
		q(dir+"/private/var-lib"), q(dir+"/private/var-log"))
	fmt.Fprintf(&b, "mount --rbind /sys/fs/cgroup %s\n", q(dir+"/cgmove"))
	fmt.Fprintf(&b, "mount -t sysfs sysfs /sys\n")
	fmt.Fprintf(&b, "mount --move %s /sys/fs/cgroup\n", q(dir+"/cgmove"))
	fmt.Fprintf(&b, "mount -t bpf bpf /sys/fs/bpf\n")
	fmt.Fprintf(&b, "mount --bind %s /run\n", q(dir+"/private/run"))
	fmt.Fprintf(&b, "mount --bind %s /var/lib\n", q(dir+"/private/var-lib"))
	fmt.Fprintf(&b, "mount --bind %s /var/log\n", q(dir+"/private/var-log"))
	for _, kv := range kernelTunables {
		f := q(dir + "/fake/" + strings.ReplaceAll(kv[0], "/", "."))
		fmt.Fprintf(&b, "echo %s > %s\nmount --bind %s /proc/sys/%s\n", kv[1], f, f, kv[0])
	}
	// A real node's mounts are shared (systemd makes / rshared); containerd refuses a
	// HostToContainer mount of a source that is neither shared nor slave. Shared here
	// means among the node's own mount namespaces: they stay slaves of the host's, so
	// nothing propagates back to it.
	fmt.Fprintf(&b, "mount --make-rshared /\n")
	fmt.Fprintf(&b, "echo ready > %s\n", q(dir+"/holder.ready"))
	fmt.Fprintf(&b, "exec sleep infinity\n")
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
