// Package cluster runs a real Kubernetes cluster for tests: the control plane of test/controlplane
// (etcd and kube-apiserver on 127.0.0.1), kube-controller-manager and kube-scheduler, and one or two
// nodes, each a real kubelet v1.37.2 with containerd 1.6, runc and the CNI bridge plugin inside a
// network namespace of test/topology. Pods are real containers; nothing of it has a link to the root
// network namespace.
//
//	c := cluster.StartForTest(t, cluster.Options{Nodes: 2, Images: archives})
//	cs := c.Client()
//	out, err := c.NodeCommand(ctx, c.Nodes()[0].Name, probe, "-proto", "tcp", "-dst", podIP+":8080").Output()
//
// # A node
//
// A node is the topology's node (or remote node) namespace plus:
//
//   - a holder: a process in a private mount namespace (propagation slave) inside the node's network
//     namespace, which every daemon of the node joins (nsenter -t HOLDER -m -n). It mounts a fresh
//     sysfs with the host's cgroup mounts moved back, a bpffs of its own at /sys/fs/bpf, private
//     /run, /var/lib and /var/log (so shim sockets, the CNI cache and /var/log/containers stay in the
//     node's state directory), and files over the /proc/sys entries kubelet checks, showing the values
//     it wants (kubelet runs with protectKernelDefaults, so it never writes the host's).
//   - containerd with its own root, state, socket and runc root under the node's state directory,
//   - the CNI bridge cni0 and host-local addresses from the node's pod subnet (10.244.<n>.0/24);
//     the nodes route each other's subnets via their node IPs,
//   - kubelet (cgroupfs driver, cgroupRoot /<prefix>-node), registered under the node's name with
//     the node IP on its uplink; the API server is reached at https://127.0.0.1:6443 inside the
//     node's namespace through controlplane.BridgeIntoNetns.
//
// # Cgroups
//
// Every process of a node is born in the node's cgroup v2 directory (topology's NodeCgroup,
// <v2 mount>/<prefix>-node; clone3 with CLONE_INTO_CGROUP) and every descendant stays below it:
// containerd, the shims, kubelet and the containers, which runc 1.1 also places in
// <prefix>-node/kubepods/... on the hybrid layout (it joins the v2 hierarchy next to the v1 ones).
// Node.Cgroup is what Switchyard's --cgroup-root gets in tests. kubelet's cgroupRoot is created
// beforehand in every v1 hierarchy (cpuset with cpus and mems copied). Only the hybrid layout (v1
// controllers, v2 at /sys/fs/cgroup/unified) is supported.
//
// # Names and cleanup
//
// The run prefix ("sy" and 6 hex digits) names the topology's namespaces and cgroups, the v1 cgroups
// (<prefix>-node, <prefix>-remote) and the state directory <StateRoot>/<prefix> (default
// /var/tmp/switchyard-cluster), which holds an owner file (pid and start time of the process that
// started the cluster). Close kills every process of the nodes through their cgroups, removes the
// cgroups deepest first, stops the control plane, closes the topology and removes the state
// directory; the nodes' mounts live only in the holders' mount namespaces and vanish with them. Down
// does the same for the runs of processes that died (what `go run ./test/cmd/cluster down` calls).
//
// kube-controller-manager and kube-scheduler run in the root namespace with --secure-port=0 (they
// listen on nothing) and talk to 127.0.0.1: they belong to no node, so a node's cgroup holds only
// what runs on that node, and the eBPF programs a test attaches there never see their API traffic.
package cluster
