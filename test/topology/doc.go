// Package topology builds simulated Kubernetes nodes out of network namespaces, for tests of Switchyard
// that need real packets, and removes them again.
//
// # Safety
//
// Nothing built here has a link to the root network namespace: every veth pair is created inside one of
// the topology's namespaces with its peer in another of them, and all traffic comes from subprocesses
// that run inside those namespaces (nsenter --net). AssertIsolated checks this after Build.
//
// # Names
//
// Every run has a prefix: "sy" followed by 6 hex digits (random unless the scenario sets one).
// Namespaces and cgroups are named "<prefix>-<role>", so the pattern ^sy[0-9a-f]{6}- marks what this
// package made; Cleanup relies on it. Interface names are "<prefix><role>" (at most 15
// bytes) except inside pods and external clients, where the interface is eth0 as on real machines.
//
//	netns <prefix>-lan         the outside segment: bridge <prefix>br, and the default gateway addresses
//	netns <prefix>-node        the node under test: uplink <prefix>n, pod veths <prefix>p<i>
//	netns <prefix>-remote      the other node: uplink <prefix>r, pod veths <prefix>p<i>
//	netns <prefix>-pod-<name>  one per pod: eth0
//	netns <prefix>-ext<i>      one per external client: eth0
//	cgroup <prefix>-node, <prefix>-remote, <prefix>-ext (under the cgroup v2 mount)
//
// A run records its owner (pid and start time) in /run/switchyard-topology/<prefix>, so that
// Cleanup(false) removes only what runs that died left behind.
//
// # Addressing and routing
//
// The node, the remote node and the external clients hang off one Linux bridge in the lan namespace.
// The node IPs sit on the node's uplink (a plain address gets /24 or /64); the lan namespace owns the
// highest free host address of the node's first subnet of each family, which is the node's default
// gateway and forwards nothing, so packets to unknown addresses vanish there (a probe times out) the
// way they would on the internet. External clients have their address as /32 (/128), an on-link route
// to each node IP and a default route via the node's first IP of their family: traffic to ClusterIPs,
// LoadBalancer IPs and externalIPs reaches the node. The remote node routes by default via the node
// too, so every path between an external client and a pod crosses the node in both directions.
//
// Pods are wired like Calico does it: eth0 carries the pod IP as /32 (/128); the default route goes via
// 169.254.1.1 (fe80::1), a permanent neighbour entry maps 169.254.1.1 to the host-side veth's fixed MAC
// ee:ee:ee:ee:ee:ee, and the host-side veth owns fe80::1. The pod's node has a /32 (/128) route to the
// pod through that veth; the other node reaches it via the pod's node IP.
//
// # Processes
//
// Each node has its own cgroup v2 child (<mount>/<prefix>-node) and every process started for a node
// or its pods is born in it (clone3 with CLONE_INTO_CGROUP, before nsenter enters the namespace), so
// cgroup-attached eBPF programs see exactly the node's processes. Every pod runs the echo server on its
// ports. Close kills and reaps every process the topology started, deletes the namespaces and removes
// the cgroups; Build cleans up the same way when it fails halfway.
package topology
