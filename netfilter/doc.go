// Package netfilter is the kernel boundary that Switchyard's netfilter-based
// backends (iptables/ and ipvs/) share: running iptables-restore and
// iptables-save (Restorer, ParseSave), choosing the nft or legacy variant
// (Variant, DetectVariant), the single-rule jumps from the built-in chains
// (Jump, Jumper over go-iptables), clearing stale UDP conntrack entries
// (Conntrack) and setting sysctls (Sysctl), each with a fake for unit tests.
//
// It is a library, not a backend: it knows nothing of the dataplane model's
// services or of any backend's chains. It exists so that backends never import
// each other (data flows one way: watcher -> dataplane model -> one backend).
package netfilter
