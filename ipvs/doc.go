// Package ipvs is Switchyard's IPVS dataplane (--mode=ipvs): kube-proxy's IPVS
// mode (v1.37), programmed from the backend-neutral desired state.
//
// Every ClusterIP, externalIP and LoadBalancer IP frontend is an IPVS virtual
// service on an address of the dummy device swyd-ipvs0 (kube-proxy's
// kube-ipvs0), every NodePort frontend one on a node address; the real servers
// are the endpoints of the desired state's routes (realServers says which under
// Local policies), forwarded by masquerading (IPVS NAT), with the
// --ipvs-scheduler, and ClientIP affinity as persistence with the service's
// timeout. Destinations that go are quiesced (weight 0) while they have
// connections, then deleted, as kube-proxy's graceful termination does.
// iptables rules do what IPVS cannot: masquerade, hairpin, REJECT and DROP,
// source ranges, and refusing ports the device's addresses do not serve
// (rules.go; plain rules per frontend where kube-proxy uses ipsets).
//
// The files:
//   - want.go, rules.go, chains.go: pure functions from the desired state to
//     the virtual services and device addresses (Want), and to the rules
//     (renderFrontend, with the fixed chains and jumps);
//   - ipvsync.go, ipvsfinish.go, records.go: the virtual services and
//     addresses, kept in step with a cache of the kernel; ruleset.go,
//     rulesync.go: the rules, likewise; stale.go: UDP conntrack cleanup;
//   - backend.go: the dataplane.Backend, ordering all of it; cleanup.go:
//     switchyard cleanup;
//   - kernel_*.go: the kernel boundaries (IPVS over github.com/moby/ipvs,
//     netlink over github.com/vishvananda/netlink), fake_*.go their fakes; the
//     rules go through netfilter.Restorer and netfilter.Jumper.
//
// A partial sync writes only the frontends that changed, from the cache; a
// full sync (the first, every --sync-period, after any failure) reads the
// kernel back and repairs whatever differs.
//
// Where it differs from kube-proxy's IPVS mode, and why:
//   - NodePorts are on the Node object's addresses (as in every mode of
//     Switchyard), not on every local address; none on 127.0.0.1, as in
//     kube-proxy's IPVS mode.
//   - Under externalTrafficPolicy Local without local endpoints, outside clients
//     are dropped (the model's verdict; kube-proxy forwards them, unmasqueraded,
//     to endpoints elsewhere, whose replies are lost), and the node's own
//     connections to an external frontend are masqueraded (the model's Host
//     route; with the address on every node's device the reply of an endpoint
//     elsewhere would not come back otherwise).
//   - Under internalTrafficPolicy Local without local endpoints the ClusterIP
//     drops, as the model and kube-proxy's other modes do (kube-proxy's IPVS
//     mode refuses, or uses other endpoints when the service is external too).
//   - A destination that comes back while it drains gets its weight back,
//     keeping its connections (kube-proxy deletes and re-adds it).
//   - Virtual services that are not Switchyard's are left alone (kube-proxy
//     deletes every one it did not make): see ipvsState.ours and Records.
package ipvs
