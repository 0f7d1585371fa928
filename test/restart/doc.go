// Package restart tests that restarting the Switchyard agent, even with kill -9, neither breaks a
// connection nor refuses a new one (issue 4). Its only content is its tests: the agent runs in a
// simulated node (test/topology) in eBPF mode, fed from manifest files, while a client pod opens a
// steady stream of new connections to a ClusterIP service and holds one socket open across the
// restarts (the socket programs), and again while a client outside the node opens new connections
// to a NodePort and keeps long-lived ones busy (the tc programs and their pinned connection
// tracking).
package restart
