//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * Socket-level load balancing: a connection or datagram to a service address is sent to a backend
 * by rewriting the address the application passed to connect()/sendmsg(), once per socket (per
 * datagram for unconnected UDP). No packet is ever NATed, so there is no conntrack entry and no
 * hairpin SNAT. recvmsg() and getpeername() translate back, so the application only ever sees the
 * service address.
 *
 * Every address is 16 bytes; IPv4 is IPv4-mapped (::ffff:a.b.c.d). That lets the IPv4 and IPv6
 * hooks share one code path, and makes IPv4 services work from dual-stack (AF_INET6) sockets too:
 * their IPv4 traffic reaches the *6 hooks with mapped addresses.
 */
#include "lb.h"

struct revnat_key {
	__u64 cookie; /* socket cookie */
	__u8 addr[16];
	__u16 port;
	__u16 pad;
	__u32 pad2;
};

struct revnat_val {
	__u8 addr[16];
	__u16 port;
	__u16 pad;
	__u32 pad2;
};

/* ClientIP affinity of sockets: the client is its network namespace (a pod). */
struct affinity_key {
	__u64 netns_cookie;
	__u32 svc_id;
	__u32 pad;
};

/* LRU: entries are never deleted by anyone; sockets that went away age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct revnat_key);
	__type(value, struct revnat_val);
} revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct affinity_key);
	__type(value, struct affinity_val);
} affinity SEC(".maps");

/* ---- addresses in and out of the hook context ---- */

/* The context's fields only allow 4-byte writes, hence the __u32 copies throughout. */

static __always_inline void get_addr4(const struct bpf_sock_addr *ctx, __u8 addr[16])
{
	__u32 a[4] = {0, 0, bpf_htonl(0x0000ffff), ctx->user_ip4};

	__builtin_memcpy(addr, a, 16);
}

static __always_inline void get_addr6(const struct bpf_sock_addr *ctx, __u8 addr[16])
{
	__u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};

	__builtin_memcpy(addr, a, 16);
}

/* Returns 0 when the address cannot be expressed in an AF_INET socket. */
static __always_inline int set_addr4(struct bpf_sock_addr *ctx, const __u8 addr[16], __u16 port)
{
	__u32 ip;

	if (!is_v4_mapped(addr))
		return 0;
	__builtin_memcpy(&ip, addr + 12, 4);
	ctx->user_ip4 = ip;
	ctx->user_port = port;
	return 1;
}

static __always_inline int set_addr6(struct bpf_sock_addr *ctx, const __u8 addr[16], __u16 port)
{
	__u32 a[4];

	__builtin_memcpy(a, addr, 16);
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
	ctx->user_port = port;
	return 1;
}

/* getpeername() and recvmsg() map (socket, backend) back to the service address. */
static __always_inline void remember(struct bpf_sock_addr *ctx, const struct backend *be,
				     const struct svc_key *svc)
{
	struct revnat_key rk = {};
	struct revnat_val rv = {};
	struct revnat_val *cur;

	rk.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rk.addr, be->addr, 16);
	rk.port = be->port;
	__builtin_memcpy(rv.addr, svc->addr, 16);
	rv.port = svc->port;
	/* Unconnected UDP passes here per datagram: write only what changed. */
	cur = bpf_map_lookup_elem(&revnat, &rk);
	if (cur && cur->port == rv.port && addr_eq(cur->addr, rv.addr))
		return;
	bpf_map_update_elem(&revnat, &rk, &rv, BPF_ANY);
}

/* Fails the syscall with err: the program returns 0, the kernel hands err to the caller. */
static __always_inline int fail(int err)
{
	bpf_set_retval(-err);
	return 0;
}

/*
 * connect() and sendmsg(): the address the application passed is in ctx. Returns what the
 * program returns: 1 lets the call go on (translated or not), 0 fails it.
 */
static __always_inline int translate(struct bpf_sock_addr *ctx, int v6)
{
	struct affinity_key ak = {};
	struct svc_key key = {};
	struct svc_val *svc;
	struct backend *be;
	__u32 backend_id;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	if (v6)
		get_addr6(ctx, key.addr);
	else
		get_addr4(ctx, key.addr);
	key.port = (__u16)ctx->user_port;
	key.proto = ctx->protocol;
	key.scope = SCOPE_SOCKET;
	svc = bpf_map_lookup_elem(&services, &key);
	if (!svc) {
		/*
		 * A cluster IP has an address-only entry (port and protocol 0): a port it does not
		 * serve is refused, as kube-proxy's nftables mode does, instead of leaving the node.
		 */
		key.port = 0;
		key.proto = 0;
		svc = bpf_map_lookup_elem(&services, &key);
		if (svc && (svc->flags & SVC_F_REJECT))
			return fail(ECONNREFUSED);
		return 1;
	}
	if (svc->flags & SVC_F_REJECT)
		return fail(ECONNREFUSED);
	/*
	 * kube-proxy drops the packets: a TCP connect() then times out after about two minutes and a
	 * UDP send vanishes. A hook cannot make the call hang or pretend to send, so it fails at once
	 * with the error the client would have seen at the end.
	 */
	if (svc->flags & SVC_F_DROP)
		return fail(ETIMEDOUT);
	/* No flag and no backend is a writer caught mid-way or a bug: refuse like kube-proxy's REJECT. */
	if (!svc->count)
		return fail(ECONNREFUSED);
	ak.netns_cookie = bpf_get_netns_cookie(ctx);
	ak.svc_id = svc->svc_id;
	if (!pick_backend(&affinity, &ak, &key, svc, &backend_id))
		return fail(ECONNREFUSED);
	be = bpf_map_lookup_elem(&backends, &backend_id);
	if (!be)
		return fail(ECONNREFUSED);
	if (v6)
		set_addr6(ctx, be->addr, be->port);
	else if (!set_addr4(ctx, be->addr, be->port))
		return fail(ECONNREFUSED); /* an IPv6 backend behind an IPv4 frontend: not reachable */
	remember(ctx, be, &key);
	return 1;
}

/* recvmsg() source and getpeername() peer: backend -> service. These hooks must return 1. */
static __always_inline int untranslate(struct bpf_sock_addr *ctx, int v6)
{
	struct revnat_key rk = {};
	struct revnat_val *rv;

	rk.cookie = bpf_get_socket_cookie(ctx);
	if (v6)
		get_addr6(ctx, rk.addr);
	else
		get_addr4(ctx, rk.addr);
	rk.port = (__u16)ctx->user_port;
	rv = bpf_map_lookup_elem(&revnat, &rk);
	if (!rv)
		return 1;
	if (v6)
		set_addr6(ctx, rv->addr, rv->port);
	else
		set_addr4(ctx, rv->addr, rv->port);
	return 1;
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx) { return translate(ctx, 0); }

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx) { return translate(ctx, 1); }

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx) { return translate(ctx, 0); }

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx) { return translate(ctx, 1); }

SEC("cgroup/recvmsg4")
int recvmsg4(struct bpf_sock_addr *ctx) { return untranslate(ctx, 0); }

SEC("cgroup/recvmsg6")
int recvmsg6(struct bpf_sock_addr *ctx) { return untranslate(ctx, 1); }

SEC("cgroup/getpeername4")
int getpeername4(struct bpf_sock_addr *ctx) { return untranslate(ctx, 0); }

SEC("cgroup/getpeername6")
int getpeername6(struct bpf_sock_addr *ctx) { return untranslate(ctx, 1); }

char LICENSE[] SEC("license") = "Dual MIT/GPL";
