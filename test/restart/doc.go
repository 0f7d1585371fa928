// Package restart tests that restarting the Switchyard agent, even with kill -9, neither breaks a
// connection nor refuses a new one (issue 4). Its only content is its test: the agent runs in a
// simulated node (test/topology) in eBPF mode, fed from manifest files, while a client pod opens a
// steady stream of new connections to a ClusterIP service and holds one socket open across the
// restarts.
package restart
