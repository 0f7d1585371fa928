// Package e2e proves an install the way an operator makes it: on a test/cluster (real
// kube-apiserver, controllers, scheduler, kubelets, containerd), Switchyard's image is
// loaded into the nodes and an overlay of deploy/overlays is applied through the API;
// the DaemonSet controller and kubelet start the agent. Workloads come from
// Deployments, EndpointSlices from the real controller, LoadBalancer status from the
// test (as a cloud controller would write it). Every check opens real connections
// from a pod, from a node or from an external client (test/cmd/probe run inside their
// namespaces), never from the test process.
//
// test/cmd/e2e runs it (`make e2e`; a short form in `make test`).
package e2e
