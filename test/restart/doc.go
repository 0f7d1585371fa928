// Package restart tests the Switchyard agent under restarts and under sustained churn. Its only
// content is its tests: the agent runs in a simulated node (test/topology) in eBPF mode, fed from
// manifest files.
//
// Restarts, even with kill -9, must neither break a connection nor refuse a new one (issue 4): a
// client pod opens a steady stream of new connections to a ClusterIP service and holds one socket
// open across the restarts (the socket programs), and again while a client outside the node opens
// new connections to a NodePort and keeps long-lived ones busy (the tc programs and their pinned
// connection tracking).
//
// Churn: a client outside the node opens new connections to a NodePort, masqueraded, at a steady
// rate for longer than the node's masquerade ports last if a closed connection keeps its port for
// TIME_WAIT, with the client or the pod closing first, and over UDP; and idle connections must
// outlive churn that fills a small connection tracking map (`make soak` runs that one for 5
// minutes).
package restart
