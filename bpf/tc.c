//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * Load balancing for traffic that arrives from outside the node: NodePorts, externalIPs,
 * LoadBalancer IPs (and cluster IPs reached from outside), on tc hooks of the node's devices.
 *
 * A new connection on an external device's ingress picks a backend from the services map
 * (scope SCOPE_OUTSIDE, or SCOPE_SOCKET for sources in the cluster CIDR: pods of other nodes get
 * the Pod route, as with kube-proxy's local-traffic detector), is DNATed to it and, when the
 * service says so, SNATed to the node address. Both directions go into the ct map, each entry
 * holding the full rewrite of its direction, so later packets and replies (seen on the device
 * they come back through: a pod's veth, or the external device for a remote backend) are
 * rewritten by one lookup. ICMP errors about a translated flow are found through their inner
 * header and rewritten too, outer and inner. Translated packets are forwarded with
 * bpf_fib_lookup + bpf_redirect(_neigh): the kernel would drop a reply whose source became the
 * node's own address as a martian if it went through routing input.
 *
 * Every address is 16 bytes, IPv4 as IPv4-mapped, as in sock.c. Not translated: IPv4 with
 * options, IPv6 with extension headers, and non-first fragments.
 */
#include "lb.h"

#include <linux/if_ether.h>
#include <linux/pkt_cls.h>

#define IPPROTO_ICMP 1
#define IPPROTO_ICMPV6 58
#define AF_INET 2
#define AF_INET6 10

#define ETH_HLEN 14
#define IP4_HLEN 20
#define IP6_HLEN 40

/* Offsets in the IPv4 / IPv6 header */
#define IP4_TTL 8
#define IP4_CSUM 10
#define IP4_SADDR 12
#define IP4_DADDR 16
#define IP6_HOPS 7
#define IP6_SADDR 8
#define IP6_DADDR 24

/* How long a flow lives without packets: conntrack's values, with kube-proxy's established TCP. */
#define CT_SYN_NS (60 * NSEC_PER_SEC)
#define CT_TCP_NS (86400 * NSEC_PER_SEC)
#define CT_CLOSED_NS (10 * NSEC_PER_SEC)
/* Linux's TIME_WAIT (TCP_TIMEWAIT_LEN) and a margin. */
#define CT_TIME_WAIT_NS (65 * NSEC_PER_SEC)
#define CT_UDP_NS (30 * NSEC_PER_SEC)
#define CT_UDP_STREAM_NS (120 * NSEC_PER_SEC)

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* TCP options: at most 40 bytes; the timestamp option is kind 8, 10 bytes long. */
#define TCP_OPT_MAX 40
#define TCP_OPT_SCAN 10
#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_TS 8
#define TCPOLEN_TS 10

/*
 * Masquerade source ports: the client's own port when it is free (conntrack's NAT tries the
 * original tuple first), else drawn at random from 1024-65535 without the NodePort range (the Go
 * side writes what is left into snat_ports): a pod's unconnected UDP reply to node:port would meet
 * the socket hook's NodePort translation. A port a local socket holds towards the backend (or
 * listens on) is skipped; a connection of the node's own that the kernel gives a port a flow holds
 * later is moved to another port on its way out (host_flow), as conntrack remaps it. The search
 * is bounded: a port is free, or held by a flow that is gone, or by a closed flow whose tuple the
 * new connection may take over (see may_take_over).
 */
#define SNAT_TRIES 24

/* One direction of a translated flow, as seen on the wire before translation. */
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* network byte order */
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* What that direction's packets become. */
struct ct_val {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 backend_id; /* forward entries: the backend, checked on use */
	/*
	 * A flow's state lives in its forward entry; its reply entry only rewrites. One byte per
	 * fact: both directions of a flow run on different CPUs at once, and a byte set on one
	 * cannot be lost to a read-modify-write of a shared flags word on the other.
	 */
	__u8 is_reply;
	__u8 seen_reply;
	__u8 fin_fwd;
	__u8 fin_rev;
	__u8 rst;
	__u8 closed;	 /* RST, or FIN both ways and the last ACK */
	__u8 backend_tw; /* the backend sent its FIN before it had the client's: it holds TIME_WAIT */
	__u8 fwd_known;	 /* fwd_end is set */
	/* From the client's packets once the flow started closing: what the backend's TIME_WAIT
	 * socket will check a SYN on the same tuple against (its rcv_nxt and ts_recent). */
	__u32 fwd_end; /* host order: after the client's last byte and its FIN */
	__u32 fwd_ts;  /* host order: the newest timestamp (TSval) */
	__u8 has_ts;   /* fwd_ts is set */
	__u8 unprotected; /* established while ct_assured was full: left in ct_lru */
	__u8 stream;	  /* UDP: the client sent again after a reply */
	__u8 host;	  /* the node's own connection, given another port (host_flow) */
	__u8 pad[4];
	/* forward entries: bpf_ktime_get_ns() after which the flow is gone; reply entries: until
	 * when a replaced flow's backend holds the port in TIME_WAIT (0: not) */
	__u64 expires;
};

struct client_affinity_key {
	__u8 addr[16];
	__u32 svc_id;
	__u32 pad;
};

/* prefixlen counts the svc_id's 32 bits too. */
struct range_key {
	__u32 prefixlen;
	__u32 svc_id;
	__u8 addr[16];
};

struct cidr_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct snat_addr {
	__u8 addr[16];
};

/*
 * Connection tracking, both directions of a flow in one of two maps, as conntrack keeps what it
 * may evict apart from what it never does. A flow starts in ct_lru; once it is established (TCP:
 * the client's ACK after the backend answered; UDP: the client sends again after a reply) both
 * entries move to ct_assured, a plain hash map that nothing evicts: the Go side deletes entries
 * that expired (bpf/ctgc.go). When the flow closes it moves back to ct_lru. So under any churn
 * the kernel evicts only flows not yet established or already closed (conntrack's early drop),
 * never an idle established connection. Both hold 2 x --bpf-ct-max entries (set by the loader).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
} ct_assured SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
} ct_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct client_affinity_key);
	__type(value, struct affinity_val);
} client_affinity SEC(".maps");

/* loadBalancerSourceRanges, per service (SVC_F_RANGES). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct range_key);
	__type(value, __u8);
} source_ranges SEC(".maps");

/* --cluster-cidr: sources that are pods. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cidr_key);
	__type(value, __u8);
} cluster_cidrs SEC(".maps");

/* The masquerade address: [0] IPv4, [1] IPv6; all zero: that family is not masqueraded. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct snat_addr);
} snat_addrs SEC(".maps");

/* What a TCP segment says of itself, read only where needed (closing, and new SYNs). */
struct tcp_seg {
	__u32 seq, ack; /* host order */
	__u32 end;	/* seq + payload + SYN + FIN */
	__u32 tsval;
	__u8 has_ts;
};

/* A new flow's temporaries: too big for the stack on top of the established path's frame. */
struct flow_tmp {
	struct ct_val fv, rv; /* the forward and reply entries being written */
	struct ct_key rk, fk; /* the reply key, and the forward key of a port's old holder */
	struct tcp_seg syn;
	struct bpf_sock_tuple sock; /* local_socket's lookup: kept off snat_port's stack */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_tmp);
} flow_tmp SEC(".maps");

#define SNAT_RANGES 4

/* The masquerade source ports: span[i] ports from min[i], for each i. */
struct snat_ports {
	__u32 min[SNAT_RANGES];
	__u32 span[SNAT_RANGES];
};

/* Written by the Go side; all spans zero: no ports. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct snat_ports);
} snat_ports SEC(".maps");

/* Counters by event, for switchyard_bpf_tc_events_total: a drop or refusal here is otherwise
 * invisible. Keep in sync with tcEvents in bpf/tcstats.go. */
enum {
	EV_NEW_FLOW,
	EV_REOPEN,
	EV_REJECT,
	EV_DROP_POLICY,
	EV_DROP_RANGES,
	EV_DROP_NO_PORT,
	EV_TO_STACK,
	EV_ERROR,
	EV_CT_FULL,
	EV_HOST_PORT,
	EV_UNTRACKED,
	EV_DRAINED,
	EV_MAX,
};

/* Room for events to come: the map is pinned, and a new size would keep an upgrade from reusing
 * it (the loader replaces an incompatible one, losing the counts). */
#define EV_SLOTS 32

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} lb_events SEC(".maps");

/* Reply tuples (backend -> node address:port) that the kernel's conntrack NAT holds: connections
 * kube-proxy masqueraded, before or beside these programs. The agent copies them from conntrack.
 * A flow must not take such a port: the backend's replies to that connection would come here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ct_key);
	__type(value, __u8);
} nat_taken SEC(".maps");

/* lb_flags[0] holds LB_DRAINING once `switchyard cleanup --drain-timeout` asked the programs to
 * start no new flow: a rollback to kube-proxy, which takes the new connections while the flows
 * under way here finish. An agent that loads the programs clears it. */
#define LB_DRAINING 1

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} lb_flags SEC(".maps");

static __always_inline int draining(void)
{
	__u32 k = 0;
	__u32 *f = bpf_map_lookup_elem(&lb_flags, &k);

	return f && (*f & LB_DRAINING);
}

/* The refusals' new headers, with their quote (room for a TCP header). */
struct reject4_buf {
	__u8 vihl, tos;
	__u16 len, id, frag;
	__u8 ttl, proto;
	__u16 csum;
	__u32 saddr, daddr;
	__u8 type, code;
	__u16 icsum;
	__u32 unused;
	__u8 inner[IP4_HLEN + 20];
};

struct reject6_buf {
	__u32 vtcfl;
	__u16 len;
	__u8 next, hops;
	__u8 saddr[16], daddr[16];
	__u8 type, code;
	__u16 icsum;
	__u32 unused;
	__u8 inner[IP6_HLEN + 20];
};

struct pseudo6 {
	__u8 saddr[16], daddr[16];
	__u32 len;
	__u32 next;
};

/*
 * The large temporaries live here, not on the stack: 6.1's verifier adds bpf_loop's callback
 * frame to the program's deepest stack and refuses more than 512 bytes. Only one of them is in
 * use at a time, and a tc program runs to its end on one CPU.
 */
struct scratch {
	union {
		struct reject4_buf r4;
		struct {
			struct reject6_buf r;
			struct pseudo6 pseudo;
		} r6;
		struct {
			struct bpf_fib_lookup fib;
			struct bpf_redir_neigh nh;
		} fwd;
		__u8 opts[64]; /* TCP options (TCP_OPT_MAX), with room for masked indexes */
	};
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* The CPU's scratch space, zeroed. */
static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);

	if (sc)
		__builtin_memset(sc, 0, sizeof(*sc));
	return sc;
}

static __always_inline void count(__u32 ev)
{
	__u64 *n = bpf_map_lookup_elem(&lb_events, &ev);

	if (n)
		*n += 1;
}

/* A packet the program cannot rewrite after all: dropped, and counted. */
static __always_inline int fail_shot(void)
{
	count(EV_ERROR);
	return TC_ACT_SHOT;
}

/* A parsed packet: where its headers are and its tuple. */
struct pkt {
	int v6;
	__u32 l3; /* offset of the IP header */
	__u32 l4; /* offset of the TCP/UDP/ICMP header */
	__u32 l4_len; /* bytes from there to the end of the IP packet */
	__u8 proto;
	__u8 tcp_flags;
	struct ct_key t;
};

/* ---- parsing ---- */

static __always_inline void map4(__u8 dst[16], __u32 a)
{
	__u32 m[4] = {0, 0, bpf_htonl(0x0000ffff), a};

	__builtin_memcpy(dst, m, 16);
}

/* Reads the IP header at p->l3; returns 0 for what is not translated. */
static __always_inline int parse_ip(struct __sk_buff *skb, struct pkt *p)
{
	if (!p->v6) {
		struct {
			__u8 vihl, tos;
			__u16 len, id, frag;
			__u8 ttl, proto;
			__u16 csum;
			__u32 saddr, daddr;
		} ip;

		if (bpf_skb_load_bytes(skb, p->l3, &ip, sizeof(ip)) < 0 || ip.vihl != 0x45 ||
		    bpf_ntohs(ip.len) < IP4_HLEN)
			return 0;
		if (ip.frag & bpf_htons(0x1fff)) /* a later fragment: no ports to match */
			return 0;
		p->proto = ip.proto;
		p->l4 = p->l3 + IP4_HLEN;
		p->l4_len = bpf_ntohs(ip.len) - IP4_HLEN;
		map4(p->t.saddr, ip.saddr);
		map4(p->t.daddr, ip.daddr);
		return 1;
	}
	struct {
		__u32 vtcfl;
		__u16 len;
		__u8 next, hops;
		__u8 saddr[16], daddr[16];
	} ip6;

	if (bpf_skb_load_bytes(skb, p->l3, &ip6, sizeof(ip6)) < 0)
		return 0;
	p->proto = ip6.next;
	p->l4 = p->l3 + IP6_HLEN;
	p->l4_len = bpf_ntohs(ip6.len);
	__builtin_memcpy(p->t.saddr, ip6.saddr, 16);
	__builtin_memcpy(p->t.daddr, ip6.daddr, 16);
	return 1;
}

static __always_inline int load_ports(struct __sk_buff *skb, __u32 off, struct ct_key *t)
{
	__u16 ports[2];

	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
		return 0;
	t->sport = ports[0];
	t->dport = ports[1];
	return 1;
}


/* Walking the TCP options in the scratch space, one option a step (scan_opt). */
struct opt_scan {
	__u32 i, len; /* offset of the next option, and where they end */
	__u32 tsval;
	int found;
};

/*
 * One step of the walk: bpf_loop verifies it once, where an unrolled loop would multiply the
 * verifier's states by every path into it.
 */
static long scan_opt(__u32 n, void *data)
{
	struct opt_scan *s = data;
	__u32 zero = 0, i = s->i;
	struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	__u8 kind, olen;

	if (!sc || i >= s->len || i >= TCP_OPT_MAX)
		return 1;
	kind = sc->opts[i & 63];
	if (kind == TCPOPT_EOL)
		return 1;
	if (kind == TCPOPT_NOP) {
		s->i = i + 1;
		return 0;
	}
	if (i + 1 >= s->len)
		return 1;
	olen = sc->opts[(i + 1) & 63];
	if (kind == TCPOPT_TS && olen == TCPOLEN_TS && i + TCPOLEN_TS <= s->len) {
		s->tsval = (__u32)sc->opts[(i + 2) & 63] << 24 | (__u32)sc->opts[(i + 3) & 63] << 16 |
			   (__u32)sc->opts[(i + 4) & 63] << 8 | sc->opts[(i + 5) & 63];
		s->found = 1;
		return 1;
	}
	if (olen < 2)
		return 1;
	s->i = i + olen;
	return 0;
}

/* Reads what tcp_seg says of the TCP segment at p->l4 (its timestamp from the options). */
static __always_inline int load_seg(struct __sk_buff *skb, const struct pkt *p, struct tcp_seg *s)
{
	__u8 h[10]; /* seq, ack, data offset, flags */
	struct scratch *sc;
	__u32 seq, ack, hlen;
	__u64 optlen; /* 64 bits: a 32-bit one is tested on a zero-extended copy the verifier does not tie to it */

	if (bpf_skb_load_bytes(skb, p->l4 + 4, h, sizeof(h)) < 0)
		return -1;
	hlen = (h[8] >> 4) * 4;
	if (hlen < 20 || hlen > p->l4_len)
		return -1;
	__builtin_memcpy(&seq, h, 4);
	__builtin_memcpy(&ack, h + 4, 4);
	s->seq = bpf_ntohl(seq);
	s->ack = bpf_ntohl(ack);
	s->end = s->seq + (p->l4_len - hlen) + !!(h[9] & TCP_SYN) + !!(h[9] & TCP_FIN);
	optlen = hlen - 20;
	/*
	 * The length must be bounded below for 6.1's verifier, which learns nothing from "== 0":
	 * "< 4" (options come in words) does it. The barriers keep clang from knowing optlen is a
	 * multiple of 4 (it would test "== 0" after all) and from folding both tests into one
	 * comparison on another register.
	 */
	asm volatile("" : "+r"(optlen));
	if (optlen < 4)
		return 0;
	asm volatile("" : "+r"(optlen));
	if (optlen > TCP_OPT_MAX)
		return 0;
	sc = get_scratch();
	if (!sc || bpf_skb_load_bytes(skb, p->l4 + 20, sc->opts, optlen) < 0)
		return 0;
	struct opt_scan scan = {.len = optlen};

	bpf_loop(TCP_OPT_SCAN, scan_opt, &scan, 0);
	s->has_ts = scan.found;
	s->tsval = scan.tsval;
	return 0;
}

static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	return p->l4 + (p->proto == IPPROTO_TCP ? 16 : 6);
}

/* ---- rewriting, with checksums ---- */

/*
 * Replaces the address at off (4 bytes for IPv4, 16 for IPv6) and fixes the checksums that
 * cover it: the IPv4 header's at ip_csum (if non-zero), and the one at l4_csum (if non-zero),
 * as part of a pseudo header or not.
 */
static __always_inline int set_addr(struct __sk_buff *skb, int v6, __u32 off, const __u8 old[16],
				    const __u8 new[16], __u32 ip_csum, __u32 l4_csum, __u64 l4_flags)
{
	if (!v6) {
		__u32 o, n;

		__builtin_memcpy(&o, old + 12, 4);
		__builtin_memcpy(&n, new + 12, 4);
		if (o == n)
			return 0;
		if (bpf_skb_store_bytes(skb, off, &n, 4, 0) < 0)
			return -1;
		if (ip_csum && bpf_l3_csum_replace(skb, ip_csum, o, n, 4) < 0)
			return -1;
		if (l4_csum && bpf_l4_csum_replace(skb, l4_csum, o, n, l4_flags | 4) < 0)
			return -1;
		return 0;
	}
	if (addr_eq(old, new))
		return 0;
	__s64 diff = bpf_csum_diff((__be32 *)old, 16, (__be32 *)new, 16, 0);

	if (bpf_skb_store_bytes(skb, off, new, 16, 0) < 0)
		return -1;
	if (l4_csum && bpf_l4_csum_replace(skb, l4_csum, 0, diff, l4_flags) < 0)
		return -1;
	return 0;
}

static __always_inline int set_port(struct __sk_buff *skb, __u32 off, __u16 old, __u16 new, __u32 l4_csum,
				    __u64 l4_flags)
{
	if (old == new)
		return 0;
	if (bpf_skb_store_bytes(skb, off, &new, 2, 0) < 0)
		return -1;
	if (l4_csum && bpf_l4_csum_replace(skb, l4_csum, old, new, l4_flags | 2) < 0)
		return -1;
	return 0;
}

static __always_inline __u32 saddr_off(const struct pkt *p, __u32 l3)
{
	return l3 + (p->v6 ? IP6_SADDR : IP4_SADDR);
}

static __always_inline __u32 daddr_off(const struct pkt *p, __u32 l3)
{
	return l3 + (p->v6 ? IP6_DADDR : IP4_DADDR);
}

/* Rewrites a TCP or UDP packet's tuple to v. */
static __always_inline int nat_l4(struct __sk_buff *skb, const struct pkt *p, const struct ct_val *v)
{
	__u32 ip_csum = p->v6 ? 0 : p->l3 + IP4_CSUM;
	__u32 l4_csum = l4_csum_off(p);
	/* An IPv4 UDP checksum of 0 means none: it stays 0 (and a computed 0 is sent as 0xffff). */
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (set_addr(skb, p->v6, saddr_off(p, p->l3), p->t.saddr, v->saddr, ip_csum, l4_csum,
		     BPF_F_PSEUDO_HDR | mangled) < 0 ||
	    set_addr(skb, p->v6, daddr_off(p, p->l3), p->t.daddr, v->daddr, ip_csum, l4_csum,
		     BPF_F_PSEUDO_HDR | mangled) < 0 ||
	    set_port(skb, p->l4, p->t.sport, v->sport, l4_csum, mangled) < 0 ||
	    set_port(skb, p->l4 + 2, p->t.dport, v->dport, l4_csum, mangled) < 0)
		return -1;
	return 0;
}

/* ---- forwarding ---- */

static __always_inline int dec_ttl(struct __sk_buff *skb, const struct pkt *p)
{
	__u8 ttl;

	if (bpf_skb_load_bytes(skb, p->l3 + (p->v6 ? IP6_HOPS : IP4_TTL), &ttl, 1) < 0 || ttl <= 1)
		return -1;
	if (p->v6) {
		ttl--;
		return bpf_skb_store_bytes(skb, p->l3 + IP6_HOPS, &ttl, 1, 0);
	}
	/* The checksum covers TTL as the high byte of a 16-bit word. */
	__u16 o = bpf_htons((__u16)ttl << 8), n = bpf_htons((__u16)(ttl - 1) << 8);

	ttl--;
	if (bpf_skb_store_bytes(skb, p->l3 + IP4_TTL, &ttl, 1, 0) < 0)
		return -1;
	return bpf_l3_csum_replace(skb, p->l3 + IP4_CSUM, o, n, 2);
}

/*
 * Sends a translated packet on to its next hop, bypassing routing input (which would drop a
 * reply that now comes from the node's own address). Anything the FIB cannot resolve here goes
 * to the stack as it is.
 */
static __always_inline int forward(struct __sk_buff *skb, const struct pkt *p, const __u8 daddr[16],
				   const __u8 saddr[16])
{
	struct scratch *sc = get_scratch();
	struct bpf_fib_lookup *fib;
	struct bpf_redir_neigh *nh;
	long rc;

	if (!sc)
		return fail_shot();
	fib = &sc->fwd.fib;
	nh = &sc->fwd.nh;
	fib->ifindex = skb->ifindex;
	fib->l4_protocol = p->proto;
	fib->tot_len = skb->len - p->l3;
	if (p->v6) {
		fib->family = AF_INET6;
		__builtin_memcpy(fib->ipv6_src, saddr, 16);
		__builtin_memcpy(fib->ipv6_dst, daddr, 16);
	} else {
		fib->family = AF_INET;
		__builtin_memcpy(&fib->ipv4_src, saddr + 12, 4);
		__builtin_memcpy(&fib->ipv4_dst, daddr + 12, 4);
	}
	rc = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
		count(EV_TO_STACK);
		return TC_ACT_OK;
	}
	if (dec_ttl(skb, p) < 0) {
		count(EV_TO_STACK);
		return TC_ACT_OK; /* the stack sends "time exceeded" */
	}
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0) < 0)
			return fail_shot();
		return bpf_redirect(fib->ifindex, 0);
	}
	if (p->v6) {
		nh->nh_family = AF_INET6;
		__builtin_memcpy(nh->ipv6_nh, fib->ipv6_dst, 16);
	} else {
		nh->nh_family = AF_INET;
		nh->ipv4_nh = fib->ipv4_dst;
	}
	return bpf_redirect_neigh(fib->ifindex, nh, sizeof(*nh), 0);
}

/* ---- REJECT: ICMP port unreachable, built in place and sent back ---- */

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

static __always_inline int swap_macs(struct __sk_buff *skb)
{
	__u8 mac[12], swapped[12];

	if (bpf_skb_load_bytes(skb, 0, mac, 12) < 0)
		return -1;
	__builtin_memcpy(swapped, mac + 6, 6);
	__builtin_memcpy(swapped + 6, mac, 6);
	return bpf_skb_store_bytes(skb, 0, swapped, 12, 0);
}

/*
 * The refusal quotes the IP header and the whole TCP header (20 bytes) or the UDP header (8).
 * The packet may still carry a transport checksum to be completed on its way out (checksum
 * offload, CHECKSUM_PARTIAL): the kernel refuses to cut a packet shorter than that checksum's
 * field, and will later write the quoted header's checksum field with the ones' complement sum
 * from that header to the end of the packet. So the quote ends with that header, and its checksum
 * field gets the one value that this completion leaves unchanged (s with 2s = -sum of the other
 * bytes, ones' complement): the ICMP checksum holds whether the completion happens or not.
 */
static __always_inline void quote_fixpoint(__u8 *l4, __u32 len, __u32 csum_at)
{
	__u16 zero = 0;
	__u32 s;

	__builtin_memcpy(l4 + csum_at, &zero, 2);
	s = (__u32)bpf_csum_diff(0, 0, (__be32 *)l4, len, 0);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = ((0xffff - s % 0xffff) * 0x8000) % 0xffff; /* 0x8000 = 1/2 modulo 0xffff */
	zero = (__u16)s;
	__builtin_memcpy(l4 + csum_at, &zero, 2);
}

static __always_inline __u32 quote_l4_len(const struct pkt *p)
{
	return p->proto == IPPROTO_TCP ? 20 : 8;
}

/* Copies the IP header and the quoted transport header into inner (room for a TCP header). */
static __always_inline int load_quote(struct __sk_buff *skb, const struct pkt *p, __u8 *inner, __u32 ip_hlen)
{
	if (p->proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, p->l3, inner, ip_hlen + 20) < 0)
			return -1;
		quote_fixpoint(inner + ip_hlen, 20, 16);
		return 0;
	}
	if (bpf_skb_load_bytes(skb, p->l3, inner, ip_hlen + 8) < 0)
		return -1;
	quote_fixpoint(inner + ip_hlen, 8, 6);
	return 0;
}

/*
 * Turns the packet into the refusal r (size bytes, of which the last 12 are unused for a UDP
 * quote): cut it after the quote, make room for the new IP and ICMP headers, write them, and send
 * it back out the device it came in on.
 */
static __always_inline int send_back(struct __sk_buff *skb, const struct pkt *p, __u32 quote, __u32 room, void *r,
				     __u32 size, int tcp)
{
	if (bpf_skb_change_tail(skb, p->l3 + quote, 0) < 0 || bpf_skb_adjust_room(skb, room, BPF_ADJ_ROOM_MAC, 0) < 0)
		return fail_shot();
	if ((tcp && bpf_skb_store_bytes(skb, p->l3, r, size, 0) < 0) ||
	    (!tcp && bpf_skb_store_bytes(skb, p->l3, r, size - 12, 0) < 0) || swap_macs(skb) < 0)
		return fail_shot();
	return bpf_redirect(skb->ifindex, 0);
}

/*
 * The packet becomes: [Ethernet back to the sender][IPv4 from the frontend][ICMP type 3 code 3]
 * [the quote], as a router's REJECT would send.
 */
static __always_inline int reject4(struct __sk_buff *skb, const struct pkt *p)
{
	struct scratch *sc = get_scratch();
	struct reject4_buf *r;
	int tcp = p->proto == IPPROTO_TCP;
	__u32 quote = IP4_HLEN + quote_l4_len(p);

	if (!sc)
		return fail_shot();
	r = &sc->r4;
	if (load_quote(skb, p, r->inner, IP4_HLEN) < 0)
		return fail_shot();
	r->vihl = 0x45;
	r->tos = 0xc0;
	r->len = bpf_htons(IP4_HLEN + 8 + quote);
	r->ttl = 64;
	r->proto = IPPROTO_ICMP;
	__builtin_memcpy(&r->saddr, p->t.daddr + 12, 4);
	__builtin_memcpy(&r->daddr, p->t.saddr + 12, 4);
	r->type = 3; /* destination unreachable */
	r->code = 3; /* port unreachable */
	r->csum = csum_fold(bpf_csum_diff(0, 0, (__be32 *)r, IP4_HLEN, 0));
	/* a UDP quote leaves zeros at the end of inner: they add nothing to the sum */
	r->icsum = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r->type, sizeof(*r) - IP4_HLEN, 0));
	return send_back(skb, p, quote, IP4_HLEN + 8, r, sizeof(*r), tcp);
}

/* The same for IPv6: ICMPv6 type 1 code 4, whose checksum covers a pseudo header. */
static __always_inline int reject6(struct __sk_buff *skb, const struct pkt *p)
{
	struct scratch *sc = get_scratch();
	struct reject6_buf *r;
	struct pseudo6 *pseudo;
	int tcp = p->proto == IPPROTO_TCP;
	__u32 quote = IP6_HLEN + quote_l4_len(p);
	__s64 sum;

	if (!sc)
		return fail_shot();
	r = &sc->r6.r;
	pseudo = &sc->r6.pseudo;
	if (load_quote(skb, p, r->inner, IP6_HLEN) < 0)
		return fail_shot();
	r->vtcfl = bpf_htonl(0x60000000);
	r->len = bpf_htons(8 + quote);
	r->next = IPPROTO_ICMPV6;
	r->hops = 64;
	__builtin_memcpy(r->saddr, p->t.daddr, 16);
	__builtin_memcpy(r->daddr, p->t.saddr, 16);
	r->type = 1; /* destination unreachable */
	r->code = 4; /* port unreachable */
	__builtin_memcpy(pseudo->saddr, r->saddr, 16);
	__builtin_memcpy(pseudo->daddr, r->daddr, 16);
	pseudo->len = bpf_htonl(8 + quote);
	pseudo->next = bpf_htonl(IPPROTO_ICMPV6);
	sum = bpf_csum_diff(0, 0, (__be32 *)pseudo, sizeof(*pseudo), 0);
	r->icsum = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r->type, sizeof(*r) - IP6_HLEN, sum));
	return send_back(skb, p, quote, IP6_HLEN + 8, r, sizeof(*r), tcp);
}

static __always_inline int reject(struct __sk_buff *skb, const struct pkt *p)
{
	count(EV_REJECT);
	return p->v6 ? reject6(skb, p) : reject4(skb, p);
}

/* ---- new connections ---- */

static __always_inline int is_pod(const __u8 addr[16])
{
	struct cidr_key k = {.prefixlen = 128};

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&cluster_cidrs, &k) != 0;
}

static __always_inline int in_ranges(__u32 svc_id, const __u8 addr[16])
{
	struct range_key k = {.prefixlen = 32 + 128, .svc_id = svc_id};

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&source_ranges, &k) != 0;
}

/* ---- flows ---- */

/* The entry for k, in either map; *assured says which. */
static __always_inline struct ct_val *ct_get(const struct ct_key *k, int *assured)
{
	struct ct_val *v = bpf_map_lookup_elem(&ct_assured, k);

	*assured = v != 0;
	return v ? v : bpf_map_lookup_elem(&ct_lru, k);
}

/* The key of the other direction of an entry: its rewrite turned around. */
static __always_inline void turn(struct ct_key *k, const struct ct_val *v, __u8 proto)
{
	__builtin_memcpy(k->saddr, v->daddr, 16);
	__builtin_memcpy(k->daddr, v->saddr, 16);
	k->sport = v->dport;
	k->dport = v->sport;
	k->proto = proto;
}

/* The forward entry a reply entry belongs to (its key in fk). */
static __always_inline struct ct_val *flow_of(const struct ct_val *rv, __u8 proto, struct ct_key *fk, int *assured)
{
	turn(fk, rv, proto);
	return ct_get(fk, assured);
}

/* The flow f still owns the reply tuple rk (and was not reopened with another one). */
static __always_inline int owns(const struct ct_val *f, const struct ct_key *rk)
{
	return addr_eq(f->daddr, rk->saddr) && f->dport == rk->sport && addr_eq(f->saddr, rk->daddr) &&
	       f->sport == rk->dport;
}

static __always_inline int alive(const struct ct_val *f, __u64 now)
{
	return (__s64)(f->expires - now) > 0;
}

/* Sequence numbers and timestamps wrap: a is after b. */
static __always_inline int after32(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
}

/* Sets a state byte; writing only what changes keeps the entry's cache line shared. */
#define SET(field)                                                                                 \
	do {                                                                                       \
		if (!(field))                                                                      \
			(field) = 1;                                                               \
	} while (0)


/* ---- when a masquerade port may be used again ---- */

/*
 * A closed flow's tuple may go to a new connection when the backend has forgotten the old one,
 * or will take the SYN for a new connection anyway. The backend holds the tuple in TIME_WAIT
 * only if it sent its FIN before it had the client's (it closed first, or the FINs crossed); a
 * reset ends TIME_WAIT. A TIME_WAIT socket accepts a SYN that is after what it received
 * (tcp_timewait_state_process): a sequence number after its rcv_nxt, or, when both sides use
 * timestamps, a TSval newer than the last one, and never an older TSval (PAWS). conntrack's
 * nf_nat_used_tuple_harder checks the sequence number alone. A port whose holder fails this is
 * left to it, and another is tried.
 */
static __always_inline int may_take_over(const struct ct_val *h, const struct tcp_seg *syn)
{
	if (!h->closed)
		return 0;
	if (h->rst || !h->backend_tw)
		return 1;
	if (!syn || !h->fwd_known)
		return 0;
	if (h->has_ts && syn->has_ts)
		return after32(syn->tsval, h->fwd_ts) || (syn->tsval == h->fwd_ts && after32(syn->seq, h->fwd_end));
	return after32(syn->seq, h->fwd_end);
}

/*
 * The state that holds the port of reply entry r: the entry itself when a reopened flow left it
 * holding the port for TIME_WAIT (keep_time_wait; *fk stays empty), else its flow if that still
 * owns it. NULL: nobody.
 */
static __always_inline const struct ct_val *port_holder(const struct ct_val *r, const struct ct_key *rk,
							 struct ct_key *fk, __u64 now)
{
	struct ct_val *f;
	int assured;

	if (r->expires)
		return alive(r, now) ? r : 0;
	f = flow_of(r, rk->proto, fk, &assured);
	if (f && alive(f, now) && owns(f, rk))
		return f;
	fk->proto = 0;
	return 0;
}

/* Forgets a flow from the client's side (its forward entry), in both maps. */
static __always_inline void retire(const struct ct_key *fk)
{
	bpf_map_delete_elem(&ct_assured, fk);
	bpf_map_delete_elem(&ct_lru, fk);
}

/*
 * Before a new flow is written to ct_lru under fk: an entry under the same key in ct_assured
 * (a flow whose backend went away, or that expired) would hide it. It goes, with the reply
 * entry it owns, which frees that flow's port.
 */
static __always_inline void forget_assured(const struct ct_key *fk)
{
	struct ct_val *old = bpf_map_lookup_elem(&ct_assured, fk);
	struct ct_key rk = {};
	struct ct_val *r;

	if (!old)
		return;
	if (!old->is_reply) {
		turn(&rk, old, fk->proto);
		r = bpf_map_lookup_elem(&ct_assured, &rk);
		if (r && r->is_reply && owns(old, &rk))
			bpf_map_delete_elem(&ct_assured, &rk);
	}
	bpf_map_delete_elem(&ct_assured, fk);
}

/* ---- following a flow ---- */

/*
 * Once the flow starts closing, remembers what a SYN taking over its tuple will be checked
 * against: the client's last sequence number and timestamp, and whether the backend's first FIN
 * came before it had the client's (its ACK does not cover the client's FIN): then the backend
 * goes through TIME_WAIT.
 */
static __always_inline void track_close(struct __sk_buff *skb, struct ct_val *f, const struct pkt *p, int reply)
{
	struct tcp_seg s = {};

	if (!(p->tcp_flags & TCP_FIN) && !f->fin_fwd && !f->fin_rev)
		return;
	if (load_seg(skb, p, &s) < 0)
		return;
	if (!reply) {
		if (!f->fwd_known || after32(s.end, f->fwd_end)) {
			f->fwd_end = s.end;
			SET(f->fwd_known);
		}
		if (s.has_ts && (!f->has_ts || after32(s.tsval, f->fwd_ts))) {
			f->fwd_ts = s.tsval;
			SET(f->has_ts);
		}
		return;
	}
	if ((p->tcp_flags & TCP_FIN) && !f->fin_rev &&
	    !(f->fin_fwd && f->fwd_known && !after32(f->fwd_end, s.ack)))
		SET(f->backend_tw);
}

/* Follows a packet of flow f (reply: from the backend) through TCP's states. */
static __always_inline void track(struct __sk_buff *skb, struct ct_val *f, const struct pkt *p, int reply, __u64 now)
{
	__u64 life, want;

	if (reply)
		SET(f->seen_reply);
	if (p->proto == IPPROTO_TCP) {
		track_close(skb, f, p, reply);
		/* Closed: reset, or the last ACK after both FINs (TIME_WAIT). Not at the second FIN:
		 * its ACK is still to come, and a new flow on the port would meet LAST_ACK. */
		if (p->tcp_flags & TCP_RST) {
			SET(f->rst);
			SET(f->closed);
		}
		if ((p->tcp_flags & TCP_FIN) && reply) {
			SET(f->fin_rev);
		} else if (p->tcp_flags & TCP_FIN) {
			SET(f->fin_fwd);
		} else if (f->fin_fwd && f->fin_rev && (p->tcp_flags & TCP_ACK)) {
			SET(f->closed);
		}
		if (!f->closed)
			life = f->seen_reply ? CT_TCP_NS : CT_SYN_NS;
		else
			life = f->backend_tw && !f->rst ? CT_TIME_WAIT_NS : CT_CLOSED_NS;
	} else {
		/* conntrack's UDP: 30 s, 120 s once it is a stream (the client spoke after a reply) */
		if (!reply && f->seen_reply)
			SET(f->stream);
		life = f->stream ? CT_UDP_STREAM_NS : CT_UDP_NS;
	}
	/* Writing on every packet would bounce the entry between CPUs: once a second does. */
	want = now + life;
	if (want < f->expires || want > f->expires + NSEC_PER_SEC)
		f->expires = want;
}

#define MOVE_NO_REPLY (-2)

/*
 * Moves both entries of flow f (forward key fk) from one map to the other: the forward entry
 * first, so that the collector never finds the reply entry in ct_assured without its flow.
 * MOVE_NO_REPLY: the reply entry is not there (evicted), nothing moved.
 */
static __always_inline int move_flow(void *from, void *to, const struct ct_key *fk, struct ct_val *f)
{
	struct ct_key rk = {};
	struct ct_val *r;

	turn(&rk, f, fk->proto);
	r = bpf_map_lookup_elem(from, &rk);
	if (!r || !r->is_reply || !owns(f, &rk))
		return MOVE_NO_REPLY;
	/* 6.1 can answer 0 to an update of a full no-prealloc hash map and keep nothing: a move
	 * is done only once both entries are found there (TestTCFullAssuredMapIsCounted). */
	if (bpf_map_update_elem(to, fk, f, BPF_ANY) < 0 || !bpf_map_lookup_elem(to, fk))
		return -1;
	if (bpf_map_update_elem(to, &rk, r, BPF_ANY) < 0 || !bpf_map_lookup_elem(to, &rk)) {
		bpf_map_delete_elem(to, fk);
		return -1;
	}
	bpf_map_delete_elem(from, fk);
	bpf_map_delete_elem(from, &rk);
	return 0;
}

/*
 * A flow that just got established (the client spoke after the backend answered) moves to
 * ct_assured, one that just closed back to ct_lru. When ct_assured is full the flow stays where
 * eviction may take it, once, and is counted: --bpf-ct-max is too small.
 */
static __always_inline void settle(const struct ct_key *fk, struct ct_val *f, int assured, int reply)
{
	if (!assured && !reply && f->seen_reply && !f->closed && !f->unprotected) {
		int err = move_flow(&ct_lru, &ct_assured, fk, f);

		if (err < 0)
			SET(f->unprotected);
		if (err == -1)
			count(EV_CT_FULL);
	} else if (assured && f->closed) {
		move_flow(&ct_assured, &ct_lru, fk, f);
	}
}

/*
 * A flow reopened on the same client tuple gets a new masquerade port; if the backend still
 * holds the old one in TIME_WAIT, the old reply entry keeps it (its expires, unused otherwise)
 * with what a SYN taking it over is checked against, since the forward entry that said so is
 * about to be replaced.
 */
static __always_inline void keep_time_wait(const struct ct_val *f, __u8 proto)
{
	struct ct_key rk = {};
	struct ct_val *r;
	int assured;

	if (!f->backend_tw || f->rst)
		return;
	turn(&rk, f, proto);
	r = ct_get(&rk, &assured);
	if (!r || !r->is_reply)
		return;
	r->closed = 1;
	r->backend_tw = 1;
	r->fwd_known = f->fwd_known;
	r->fwd_end = f->fwd_end;
	r->has_ts = f->has_ts;
	r->fwd_ts = f->fwd_ts;
	r->expires = f->expires;
}

/* A SYN on a flow that closed starts a new one, as conntrack reopens a connection. */
static __always_inline int reopens(const struct ct_val *f, const struct pkt *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN && f->closed;
}

/* ---- masquerade ports ---- */

static __always_inline int random_snat_port(const struct snat_ports *r, __u16 *port)
{
	__u32 span = 0, x;

	for (int i = 0; i < SNAT_RANGES; i++)
		span += r->span[i];
	if (!span)
		return 0;
	x = bpf_get_prandom_u32() % span;
	for (int i = 0; i < SNAT_RANGES; i++) {
		if (x < r->span[i]) {
			*port = r->min[i] + x;
			return 1;
		}
		x -= r->span[i];
	}
	return 0;
}

static __always_inline int is_snat_port(const struct snat_ports *r, __u16 port)
{
	for (int i = 0; i < SNAT_RANGES; i++)
		if (port >= r->min[i] && port - r->min[i] < r->span[i])
			return 1;
	return 0;
}

/* A socket of the node owns the tuple t->rk's reply would arrive on (connected, or listening). */
static __always_inline int local_socket(struct __sk_buff *skb, struct flow_tmp *t, int v6)
{
	struct bpf_sock_tuple *st = &t->sock;
	const struct ct_key *rk = &t->rk;
	struct bpf_sock *sk;
	__u32 size;

	__builtin_memset(st, 0, sizeof(*st));
	if (v6) {
		__builtin_memcpy(st->ipv6.saddr, rk->saddr, 16);
		__builtin_memcpy(st->ipv6.daddr, rk->daddr, 16);
		st->ipv6.sport = rk->sport;
		st->ipv6.dport = rk->dport;
		size = sizeof(st->ipv6);
	} else {
		__builtin_memcpy(&st->ipv4.saddr, rk->saddr + 12, 4);
		__builtin_memcpy(&st->ipv4.daddr, rk->daddr + 12, 4);
		st->ipv4.sport = rk->sport;
		st->ipv4.dport = rk->dport;
		size = sizeof(st->ipv4);
	}
	if (rk->proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, st, size, BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, st, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* One search for a masquerade port (snat_port), shared with its steps. */
struct snat_search {
	struct __sk_buff *skb;
	struct flow_tmp *t;
	const struct snat_ports *range;
	__u64 now;
	__u16 want; /* host order */
	__u8 v6, is_syn, found;
};

/*
 * One try (the i-th): a port no entry has, or whose holder is gone or lets the new connection
 * take it over. bpf_loop verifies it once, where an unrolled loop would multiply the verifier's
 * states by every path into it (ext_ingress came near the million instructions).
 */
static long snat_try(__u32 i, void *data)
{
	struct snat_search *s = data;
	struct flow_tmp *t = s->t;
	const struct ct_val *h;
	struct ct_val *old;
	__u16 port = s->want;
	int assured;

	if (i > 0 || !is_snat_port(s->range, port)) {
		if (!random_snat_port(s->range, &port))
			return 1;
	}
	t->rk.dport = bpf_htons(port);
	if (local_socket(s->skb, t, s->v6) || bpf_map_lookup_elem(&nat_taken, &t->rk))
		return 0;
	old = ct_get(&t->rk, &assured);
	if (!old) {
		if (bpf_map_update_elem(&ct_lru, &t->rk, &t->rv, BPF_NOEXIST) < 0)
			return 0;
		s->found = 1;
		return 1;
	}
	if (!old->is_reply) /* a flow from the backend's own address and port: not ours */
		return 0;
	__builtin_memset(&t->fk, 0, sizeof(t->fk));
	h = port_holder(old, &t->rk, &t->fk, s->now);
	if (h && !may_take_over(h, s->is_syn ? &t->syn : 0))
		return 0;
	if (t->fk.proto)
		retire(&t->fk);
	if (assured)
		bpf_map_delete_elem(&ct_assured, &t->rk);
	if (bpf_map_update_elem(&ct_lru, &t->rk, &t->rv, BPF_ANY) < 0)
		return 0;
	s->found = 1;
	return 1;
}

/*
 * Picks a source port on the masquerade address for a flow to the backend in t->rk and writes
 * the flow's reply entry t->rv there (see snat_try), trying the client's own port (want,
 * network order) first. Taking over forgets the old flow's forward entry, as conntrack kills the
 * old entry: a late packet of the old connection must not reach the new one's backend as if it
 * belonged there.
 */
static __always_inline int snat_port(struct __sk_buff *skb, struct flow_tmp *t, __u16 want, int v6, int is_syn)
{
	__u32 zero = 0;
	struct snat_ports *range = bpf_map_lookup_elem(&snat_ports, &zero);
	struct snat_search s = {.skb = skb, .t = t, .now = bpf_ktime_get_ns(), .want = bpf_ntohs(want),
				.v6 = v6, .is_syn = is_syn};

	if (!range)
		return -1;
	s.range = range;
	bpf_loop(SNAT_TRIES, snat_try, &s, 0);
	return s.found ? 0 : -1;
}

static __always_inline int is_zero(const __u8 a[16])
{
	__u64 hi, lo;

	__builtin_memcpy(&hi, a, 8);
	__builtin_memcpy(&lo, a + 8, 8);
	return !(hi | lo);
}

/*
 * Writes both directions of a new flow from the client (p->t) through the frontend to backend
 * be, SNATed to the node address when masq: returns the forward entry's rewrite in fv.
 */
static __always_inline int open_flow(struct __sk_buff *skb, const struct pkt *p, __u32 backend_id,
				     const struct backend *be, int masq, struct flow_tmp *t, int forget)
{
	struct ct_val *fv = &t->fv, *rv = &t->rv;
	__u64 now = bpf_ktime_get_ns();

	/* the reply: backend -> client (or node address), back to frontend -> client */
	__builtin_memcpy(t->rk.saddr, be->addr, 16);
	t->rk.sport = be->port;
	t->rk.proto = p->proto;
	__builtin_memcpy(rv->saddr, p->t.daddr, 16);
	__builtin_memcpy(rv->daddr, p->t.saddr, 16);
	rv->sport = p->t.dport;
	rv->dport = p->t.sport;
	rv->backend_id = backend_id;
	rv->is_reply = 1;
	if (forget)
		forget_assured(&p->t);
	if (masq) {
		__u32 family = p->v6 ? 1 : 0;
		struct snat_addr *sa = bpf_map_lookup_elem(&snat_addrs, &family);
		int is_syn = p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;

		if (!sa || is_zero(sa->addr))
			return -1;
		__builtin_memcpy(t->rk.daddr, sa->addr, 16);
		if (is_syn && load_seg(skb, p, &t->syn) < 0)
			is_syn = 0;
		if (snat_port(skb, t, p->t.sport, p->v6, is_syn) < 0)
			return -1;
	} else {
		__builtin_memcpy(t->rk.daddr, p->t.saddr, 16);
		t->rk.dport = p->t.sport;
		bpf_map_delete_elem(&ct_assured, &t->rk);
		if (bpf_map_update_elem(&ct_lru, &t->rk, rv, BPF_ANY) < 0)
			return -1;
	}
	__builtin_memcpy(fv->saddr, t->rk.daddr, 16);
	fv->sport = t->rk.dport;
	__builtin_memcpy(fv->daddr, be->addr, 16);
	fv->dport = be->port;
	fv->backend_id = backend_id;
	/* fv comes zeroed: a forward entry with no state yet */
	track(skb, fv, p, 0, now);
	return bpf_map_update_elem(&ct_lru, &p->t, fv, BPF_ANY);
}

/*
 * A new connection to a frontend from outside: DNAT (and SNAT), REJECT, DROP, or not ours. A
 * function of its own (a BPF-to-BPF call): its stack and the established path's do not add up.
 * forget: ct_assured has an entry for the client's tuple (a flow that expired or lost its
 * backend) that must go first.
 */
static __noinline int new_flow(struct __sk_buff *skb, struct pkt *p, int forget)
{
	struct client_affinity_key ak = {};
	struct svc_key key = {};
	struct svc_val *svc;
	struct backend *be;
	struct flow_tmp *t;
	__u32 backend_id, zero = 0;

	__builtin_memcpy(key.addr, p->t.daddr, 16);
	key.port = p->t.dport;
	key.proto = p->proto;
	key.scope = is_pod(p->t.saddr) ? SCOPE_SOCKET : SCOPE_OUTSIDE;
	svc = bpf_map_lookup_elem(&services, &key);
	if (!svc) {
		/* A cluster IP refuses the ports it does not serve, as kube-proxy's nftables mode. */
		key.port = 0;
		key.proto = 0;
		svc = bpf_map_lookup_elem(&services, &key);
		if (svc && (svc->flags & SVC_F_REJECT))
			return reject(skb, p);
		return TC_ACT_OK;
	}
	if ((svc->flags & SVC_F_RANGES) && !in_ranges(svc->svc_id, p->t.saddr)) {
		count(EV_DROP_RANGES);
		return TC_ACT_SHOT;
	}
	if (svc->flags & SVC_F_DROP) {
		count(EV_DROP_POLICY);
		return TC_ACT_SHOT;
	}
	if ((svc->flags & SVC_F_REJECT) || !svc->count)
		return reject(skb, p);
	__builtin_memcpy(ak.addr, p->t.saddr, 16);
	ak.svc_id = svc->svc_id;
	if (!pick_backend(&client_affinity, &ak, &key, svc, &backend_id))
		return reject(skb, p);
	be = bpf_map_lookup_elem(&backends, &backend_id);
	if (!be || is_v4_mapped(be->addr) == p->v6)
		return reject(skb, p); /* no backend of the packet's family */
	t = bpf_map_lookup_elem(&flow_tmp, &zero);
	if (!t)
		return fail_shot();
	__builtin_memset(t, 0, sizeof(*t));
	if (open_flow(skb, p, backend_id, be, svc->flags & SVC_F_MASQ, t, forget) < 0) {
		count(EV_DROP_NO_PORT); /* like a full conntrack table */
		return TC_ACT_SHOT;
	}
	count(EV_NEW_FLOW);
	if (nat_l4(skb, p, &t->fv) < 0)
		return fail_shot();
	return forward(skb, p, t->fv.daddr, t->fv.saddr);
}

/*
 * A connection of the node's own from the masquerade address whose reply tuple a masqueraded flow
 * holds (the kernel checks only its sockets when it gives a port): its replies would be taken for
 * that flow's. It gets another port on the wire, as conntrack's NAT remaps a local connection that
 * clashes (a null binding through get_unique_tuple), and is tracked as a flow of its own. Only a
 * packet that can start a connection gets here: a SYN, or a UDP datagram. reopen: the forward
 * entry of an earlier connection on the tuple (closed, or expired) is there; it goes when no port
 * is taken.
 */
static __noinline int host_flow(struct __sk_buff *skb, struct pkt *p, int reopen)
{
	__u32 family = p->v6 ? 1 : 0, zero = 0;
	struct snat_addr *sa = bpf_map_lookup_elem(&snat_addrs, &family);
	const struct ct_val *old;
	struct flow_tmp *t;
	int assured;

	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN)
		return TC_ACT_OK;
	if (!sa || !addr_eq(sa->addr, p->t.saddr))
		return TC_ACT_OK;
	t = bpf_map_lookup_elem(&flow_tmp, &zero);
	if (!t)
		return TC_ACT_OK;
	__builtin_memset(t, 0, sizeof(*t));
	__builtin_memcpy(t->rk.saddr, p->t.daddr, 16);
	__builtin_memcpy(t->rk.daddr, p->t.saddr, 16);
	t->rk.sport = p->t.dport;
	t->rk.dport = p->t.sport;
	t->rk.proto = p->proto;
	old = ct_get(&t->rk, &assured);
	if (!old || !old->is_reply || !port_holder(old, &t->rk, &t->fk, bpf_ktime_get_ns())) {
		if (reopen)
			retire(&p->t);
		return TC_ACT_OK;
	}
	__builtin_memcpy(t->rv.saddr, p->t.daddr, 16);
	__builtin_memcpy(t->rv.daddr, p->t.saddr, 16);
	t->rv.sport = p->t.dport;
	t->rv.dport = p->t.sport;
	t->rv.is_reply = 1;
	t->rv.host = 1;
	if (snat_port(skb, t, 0, p->v6, 0) < 0) {
		count(EV_DROP_NO_PORT);
		return TC_ACT_SHOT;
	}
	__builtin_memcpy(t->fv.saddr, p->t.saddr, 16);
	__builtin_memcpy(t->fv.daddr, p->t.daddr, 16);
	t->fv.sport = t->rk.dport;
	t->fv.dport = p->t.dport;
	t->fv.host = 1;
	track(skb, &t->fv, p, 0, bpf_ktime_get_ns());
	if (bpf_map_update_elem(&ct_lru, &p->t, &t->fv, BPF_ANY) < 0)
		return fail_shot();
	count(EV_HOST_PORT);
	if (nat_l4(skb, p, &t->fv) < 0)
		return fail_shot();
	return TC_ACT_OK;
}

/* A forward entry is only good while its backend still exists: else the flow starts over. */
static __always_inline int stale(const struct ct_val *v)
{
	struct backend *be;

	be = bpf_map_lookup_elem(&backends, &v->backend_id);
	return !be || !addr_eq(be->addr, v->daddr) || be->port != v->dport;
}

/* ---- ICMP errors about a translated flow ---- */

static __always_inline int icmp_is_error(int v6, __u8 type)
{
	if (v6)
		return type >= 1 && type <= 4; /* unreachable, too big, time exceeded, parameter */
	return type == 3 || type == 11 || type == 12;
}

/*
 * The error's inner header is a packet of the flow going the other way, so the entry for the
 * outer packet's direction is the inner tuple turned around. Outer destination and inner source
 * are the same host (and so get the same new address), as are the outer source, when it is not
 * a router on the path, and the inner destination.
 */
static __noinline int icmp_error(struct __sk_buff *skb, struct pkt *p)
{
	__u32 icsum = p->l4 + 2, in3 = p->l4 + 8, in4;
	__u64 outer_flags = p->v6 ? BPF_F_PSEUDO_HDR : 0; /* ICMPv6 covers the outer addresses */
	struct pkt in = {.v6 = p->v6, .l3 = in3};
	struct ct_key k = {};
	struct ct_val *v;
	int assured;
	__u8 type;

	if (bpf_skb_load_bytes(skb, p->l4, &type, 1) < 0 || !icmp_is_error(p->v6, type))
		return TC_ACT_OK;
	if (!parse_ip(skb, &in) || (in.proto != IPPROTO_TCP && in.proto != IPPROTO_UDP))
		return TC_ACT_OK;
	in4 = in.l4;
	if (!load_ports(skb, in4, &in.t))
		return TC_ACT_OK;
	__builtin_memcpy(k.saddr, in.t.daddr, 16);
	__builtin_memcpy(k.daddr, in.t.saddr, 16);
	k.sport = in.t.dport;
	k.dport = in.t.sport;
	k.proto = in.proto;
	v = ct_get(&k, &assured);
	if (!v)
		return TC_ACT_OK;
	struct ct_val nv = *v;
	__u8 osrc[16];
	__u16 in_csum_old = 0, in_csum_new = 0;

	__builtin_memcpy(osrc, addr_eq(p->t.saddr, in.t.daddr) ? nv.saddr : p->t.saddr, 16);
	if (set_addr(skb, p->v6, daddr_off(p, p->l3), p->t.daddr, nv.daddr, p->v6 ? 0 : p->l3 + IP4_CSUM,
		     p->v6 ? icsum : 0, outer_flags) < 0 ||
	    set_addr(skb, p->v6, saddr_off(p, p->l3), p->t.saddr, osrc, p->v6 ? 0 : p->l3 + IP4_CSUM,
		     p->v6 ? icsum : 0, outer_flags) < 0)
		return fail_shot();
	/* The inner IPv4 header's checksum changes with its addresses, and ICMP covers both. */
	if (!p->v6 && bpf_skb_load_bytes(skb, in3 + IP4_CSUM, &in_csum_old, 2) < 0)
		return fail_shot();
	if (set_addr(skb, p->v6, saddr_off(p, in3), in.t.saddr, nv.daddr, p->v6 ? 0 : in3 + IP4_CSUM, icsum, 0) < 0 ||
	    set_addr(skb, p->v6, daddr_off(p, in3), in.t.daddr, nv.saddr, p->v6 ? 0 : in3 + IP4_CSUM, icsum, 0) < 0 ||
	    set_port(skb, in4, in.t.sport, nv.dport, icsum, 0) < 0 ||
	    set_port(skb, in4 + 2, in.t.dport, nv.sport, icsum, 0) < 0)
		return fail_shot();
	if (!p->v6) {
		if (bpf_skb_load_bytes(skb, in3 + IP4_CSUM, &in_csum_new, 2) < 0 ||
		    bpf_l4_csum_replace(skb, icsum, in_csum_old, in_csum_new, 2) < 0)
			return fail_shot();
	}
	/* The inner TCP/UDP checksum is left: receivers match errors by ports and never check it. */
	return forward(skb, p, nv.daddr, osrc);
}

/* ---- entry points ---- */

#define NEW_FLOW (-1)

/*
 * A packet whose tuple has an entry v (in ct_assured if assured): translated as its flow says,
 * or NEW_FLOW when it starts one (a SYN on a closed flow, a flow that expired or lost its
 * backend). A function of its own, like new_flow: their stacks do not add up.
 */
static __noinline int known_flow(struct __sk_buff *skb, struct pkt *p, struct ct_val *v, int assured, int where)
{
	int external = where & 1, redirect = where & 2, reply = v->is_reply, f_assured;
	struct ct_key fk = {};
	struct ct_val *f, nv;
	__u64 now = bpf_ktime_get_ns();

	if (reply) {
		f = flow_of(v, p->proto, &fk, &f_assured);
	} else {
		f = v;
		fk = p->t;
		f_assured = assured;
	}
	if (!reply && reopens(f, p)) {
		count(EV_REOPEN);
		keep_time_wait(f, p->proto);
		return NEW_FLOW;
	}
	if (!f || !alive(f, now) || (reply && !owns(f, &p->t)) || (external && !reply && stale(f)))
		return NEW_FLOW;
	/* Draining, kube-proxy takes the new connections, and its masquerade may pick the port a
	 * flow that just closed here still holds towards the same backend: that connection's
	 * replies are not this flow's late segments. */
	if (reply && (f->closed || f->rst) && draining())
		return NEW_FLOW;
	track(skb, f, p, reply, now);
	nv = *v;
	settle(&fk, f, f_assured, reply);
	if (nat_l4(skb, p, &nv) < 0)
		return fail_shot();
	/* a reply to the node's own connection goes up its stack */
	return redirect && !nv.host ? forward(skb, p, nv.daddr, nv.saddr) : TC_ACT_OK;
}

/*
 * external: the device faces the outside, so new connections are load-balanced here; on other
 * devices (pods') only packets of flows that exist are translated. redirect: translated packets
 * are forwarded by the program (ingress); on egress they just go on, and the node's own
 * connections are checked against the masqueraded flows' ports (host_flow).
 */
static __always_inline int handle(struct __sk_buff *skb, int external, int redirect)
{
	struct pkt p = {.l3 = ETH_HLEN};
	struct ct_val *v;
	int assured;

	if (skb->protocol == bpf_htons(ETH_P_IP))
		p.v6 = 0;
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		p.v6 = 1;
	else
		return TC_ACT_OK;
	if (!parse_ip(skb, &p))
		return TC_ACT_OK;
	if ((!p.v6 && p.proto == IPPROTO_ICMP) || (p.v6 && p.proto == IPPROTO_ICMPV6))
		return redirect ? icmp_error(skb, &p) : TC_ACT_OK;
	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP)
		return TC_ACT_OK;
	if (!load_ports(skb, p.l4, &p.t))
		return TC_ACT_OK;
	if (p.proto == IPPROTO_TCP && bpf_skb_load_bytes(skb, p.l4 + 13, &p.tcp_flags, 1) < 0)
		return TC_ACT_OK;
	p.t.proto = p.proto;
	v = ct_get(&p.t, &assured);
	if (v) {
		int ret = known_flow(skb, &p, v, assured, (external ? 1 : 0) | (redirect ? 2 : 0));

		if (ret != NEW_FLOW)
			return ret;
	}
	if (!redirect)
		return host_flow(skb, &p, v && !v->is_reply);
	if (!external)
		return TC_ACT_OK;
	/* Only a SYN starts a TCP flow. Another segment with no flow belongs to a connection these
	 * programs never saw, such as one kube-proxy's conntrack NATed before Switchyard took over:
	 * the stack's conntrack entry still carries it, where a backend picked afresh would reset it. */
	if (p.proto == IPPROTO_TCP && (p.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN) {
		count(EV_UNTRACKED);
		return TC_ACT_OK;
	}
	if (draining()) {
		count(EV_DRAINED);
		return TC_ACT_OK;
	}
	return new_flow(skb, &p, assured);
}

/* Ingress of the devices that face the outside (the node addresses' devices, or --devices). */
SEC("tc")
int ext_ingress(struct __sk_buff *skb) { return handle(skb, 1, 1); }

/*
 * Egress programs act on the node's own packets only: replies of a backend on the node itself (a
 * host-network endpoint) and the node's own connections (host_flow). What came in on a device
 * (forwarded, or redirected here by ingress: translated already) is left alone at once. Its
 * socket tells nothing: a pod's packets keep theirs across the veth (skb_scrub_packet).
 */
static __always_inline int egress(struct __sk_buff *skb)
{
	if (skb->ingress_ifindex)
		return TC_ACT_OK;
	return handle(skb, 0, 0);
}

/* Egress of the devices that face the outside. */
SEC("tc")
int ext_egress(struct __sk_buff *skb) { return egress(skb); }

/* Ingress of every other device (pods' veths): replies of backends on this node. */
SEC("tc")
int pod_ingress(struct __sk_buff *skb) { return handle(skb, 0, 1); }

/* Egress of those devices: the node's own connections to its pods. */
SEC("tc")
int pod_egress(struct __sk_buff *skb) { return egress(skb); }

char LICENSE[] SEC("license") = "Dual MIT/GPL";
