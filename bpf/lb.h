/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * What the socket programs (sock.c) and the tc programs (tc.c) share: the service and backend
 * maps the Go writer (bpf/writer.go) fills, and backend selection. Plain structs only (no
 * vmlinux.h, no CO-RE): see shared/PITFALLS.md.
 */
#ifndef SWITCHYARD_LB_H
#define SWITCHYARD_LB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define ETIMEDOUT 110
#define ECONNREFUSED 111

#define SVC_F_REJECT 1
#define SVC_F_DROP 2

#define SVC_F_MASQ 4   /* tc: SNAT new connections to the node address */
#define SVC_F_RANGES 8 /* tc: only sources in the service's source ranges */

#define SCOPE_SOCKET 0  /* the Pod route: traffic that starts on the node (and pods elsewhere) */
#define SCOPE_OUTSIDE 1 /* the Outside route: traffic that arrives from outside the node */

#define NSEC_PER_SEC 1000000000ULL

/* The map layouts are the contract with the Go writer (bpf/writer.go): keep them in sync. */

struct svc_key {
	__u8 addr[16]; /* frontend address */
	__u16 port;    /* network byte order */
	__u8 proto;
	__u8 scope;
	__u16 slot; /* 0: the service entry; 1..count: backend slots */
	__u16 pad;
};

struct svc_val {
	__u32 backend_id; /* slot > 0 */
	__u32 svc_id;     /* slot 0 */
	__u16 count;      /* slot 0 */
	__u8 flags;       /* slot 0 */
	__u8 pad;
	__u32 affinity_timeout; /* slot 0, seconds; 0 = no affinity */
};

struct backend {
	__u8 addr[16];
	__u16 port; /* network byte order */
	__u8 proto;
	__u8 flags;
};

struct affinity_val {
	__u32 backend_id;
	__u32 pad;
	__u64 last_used_ns;
};

/* Sizes are defaults: the loader overrides max_entries. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

/* ---- addresses ---- */

static __always_inline int is_v4_mapped(const __u8 addr[16])
{
	__u64 lo;
	__u32 mid;

	__builtin_memcpy(&lo, addr, 8);
	__builtin_memcpy(&mid, addr + 8, 4);
	return lo == 0 && mid == bpf_htonl(0x0000ffff);
}

static __always_inline int addr_eq(const __u8 a[16], const __u8 b[16])
{
	__u64 a0, a1, b0, b1;

	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, b + 8, 8);
	return a0 == b0 && a1 == b1;
}

/* ---- backend selection ---- */

struct slot_scan {
	struct svc_key key;
	__u32 backend_id;
	int found;
};

static long scan_slot(__u32 i, void *data)
{
	struct slot_scan *s = data;
	struct svc_val *v;

	s->key.slot = i + 1;
	v = bpf_map_lookup_elem(&services, &s->key);
	if (v && v->backend_id == s->backend_id) {
		s->found = 1;
		return 1; /* stop */
	}
	return 0;
}

/*
 * An affinity entry outlives the backend it names when the service's endpoints change: it only
 * counts while that backend still fills one of the slots. bpf_loop keeps the verifier's cost
 * independent of the backend count.
 */
static __always_inline int in_slots(const struct svc_key *svc, __u16 count, __u32 backend_id)
{
	struct slot_scan s = {.key = *svc, .backend_id = backend_id};

	bpf_loop(count, scan_slot, &s, 0);
	return s.found;
}

static __always_inline int random_slot(struct svc_key *key, __u16 count, __u32 *backend_id)
{
	struct svc_val *slot;

	key->slot = bpf_get_prandom_u32() % count + 1;
	slot = bpf_map_lookup_elem(&services, key);
	key->slot = 0;
	if (!slot)
		return 0;
	*backend_id = slot->backend_id;
	return 1;
}

/*
 * ClientIP affinity: aff_key names the client (a network namespace for sockets, an address for
 * packets), and every connection of that client to the service sticks to one backend, like
 * kube-proxy's per-source-IP "recent" match. Each use refreshes the entry, as kube-proxy's --set
 * does.
 */
static __always_inline int pick_backend(void *aff_map, const void *aff_key, struct svc_key *key,
					const struct svc_val *svc, __u32 *backend_id)
{
	struct affinity_val av = {};
	struct affinity_val *cur;
	__u64 now;

	if (!svc->affinity_timeout)
		return random_slot(key, svc->count, backend_id);

	now = bpf_ktime_get_ns();
	cur = bpf_map_lookup_elem(aff_map, aff_key);
	if (cur && (__s64)(now - cur->last_used_ns) < (__s64)svc->affinity_timeout * (__s64)NSEC_PER_SEC &&
	    in_slots(key, svc->count, cur->backend_id)) {
		*backend_id = cur->backend_id;
		cur->last_used_ns = now;
		return 1;
	}
	if (!random_slot(key, svc->count, backend_id))
		return 0;
	av.backend_id = *backend_id;
	av.last_used_ns = now;
	bpf_map_update_elem(aff_map, aff_key, &av, BPF_ANY);
	return 1;
}

#endif
