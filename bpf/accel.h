/* SPDX-License-Identifier: GPL-2.0 */
/*
 * accel.h - the one definition of everything the two programs and userspace
 * share: the socket key, the endpoint policy, the per-socket state and the
 * counters. accel/maps.py mirrors every struct below with ctypes, and
 * tests/integration/test_layout.py checks the mirrors against what clang built.
 */
#ifndef ACCEL_H
#define ACCEL_H

#include <uapi/linux/bpf.h>
#include <linux/socket.h>

/*
 * The key of a socket in the sockhash (docs/DESIGN.md, invariant 1): the
 * connection's identity as TCP itself knows it, the 4-tuple and both
 * initial sequence numbers.
 *
 * Addresses are 16 bytes, IPv4 stored v4-mapped (::ffff:a.b.c.d) so that an
 * AF_INET6 socket talking to an IPv4 peer produces the same bytes as the
 * peer's AF_INET socket (invariant 2). Ports are host byte order.
 *
 * netns is the network namespace cookie when the connection cannot leave its
 * namespace (loopback, or local address == remote address), else 0: two pods'
 * identical 127.0.0.1:x <-> 127.0.0.1:y pairs then have different keys, while
 * pod A (netns A) still finds pod B (netns B) by address alone.
 *
 * local_seq and remote_seq are snd_nxt and rcv_nxt at ESTABLISHED (each
 * end's initial sequence number + 1; sockops inserts only sockets that have
 * moved no data yet). A tuple alone does not name one connection: a socket
 * whose connection ended keeps its entry until its fd is closed, and TIME_WAIT
 * reuse hands the same tuple to a new connection meanwhile. With the sequence
 * numbers in the key, the peer key a sender computes matches the socket at
 * the other end of ITS connection and no other: the stale socket's key has
 * another pair, so it can neither be found nor block the new insert.
 */
struct sock_key {
	__u64 netns;
	__u32 local_ip[4];
	__u32 remote_ip[4];
	__u32 local_port;
	__u32 remote_port;
	__u32 local_seq;
	__u32 remote_seq;
};

/* Key of the local-endpoint map: one address, normalised like sock_key. */
struct endpoint_key {
	__u32 ip[4];
};

/* Policy of a local endpoint. Presence alone is not enough: an address may be
 * local but excluded (opted out, or seen in more than one namespace so that
 * a key with netns 0 could match the wrong socket). */
enum accel_policy {
	ACCEL_POLICY_ACCELERATE = 1,
	ACCEL_POLICY_OPT_OUT = 2,
	ACCEL_POLICY_AMBIGUOUS = 3,
};

struct endpoint_value {
	__u32 policy; /* enum accel_policy */
	__u32 source; /* bit set of who reported it (controller's business) */
};

/* Per-socket state in SK_STORAGE, read by sk_msg (invariant 4). */
enum accel_sock_mode {
	ACCEL_MODE_NEW = 0,	 /* nothing sent yet */
	ACCEL_MODE_REDIRECT = 1, /* every byte so far was redirected */
	ACCEL_MODE_TCP = 2,	 /* on TCP for good: never redirect again */
	ACCEL_MODE_WAIT = 3,	 /* on TCP while the receiver holds too much; back once order-safe */
};

/*
 * Per-socket state in SK_STORAGE. sockops writes it at ESTABLISHED, before
 * the insert, so that the per-message program reads what it needs instead of
 * recomputing it: the peer's key (ours mirrored), the small-write rule's slot
 * and sender id, and this socket's own kernel address (for the flow-control
 * reads of its write_seq and send buffer). sk_msg adds the peer's address
 * once it has looked it up (sock_ptrs).
 */
struct sock_state {
	struct sock_key peer; /* the key of the other end of this connection */
	__u32 mode;	      /* enum accel_sock_mode */
	__u32 burst;	      /* consecutive small messages sent close together */
	__u64 last_ns;	      /* when the previous message was sent */
	__u32 slot;	      /* small-write slot both ends of the connection share */
	__u32 sender;	      /* this end's id in that slot */
	__u32 small_limit;    /* bytes below which a write counts as small */
	__u32 allowance;      /* flow control: the bound grown while the receiver kept up (0: not grown) */
	__u64 self;	      /* this socket's struct sock *, as a number: read only through probe reads */
	__u64 peer_sk;	      /* the peer's, once known (0 before) */
	__u64 wait_since;     /* when the socket last moved to WAIT (ns) */
	__u32 q_expect;	      /* the peer's queue after our last redirect, had it read nothing since */
	__u32 pad;
	__u64 read_ns; /* when we last saw the peer read (its queue below q_expect) */
};

/*
 * What `accel conns` shows of one socket's path (conn_flows, by the socket's
 * own key): written by sk_msg only when the socket changes mode, never per
 * message, and read only by the controller. A socket that never changed has
 * no entry: it has redirected every byte it sent.
 */
struct conn_flow {
	__u32 mode;	  /* enum accel_sock_mode, since changed_ns */
	__u32 reason;	  /* enum accel_reason of its move to TCP for good (0: none yet) */
	__u32 waits;	  /* moves to WAIT */
	__u32 returns;	  /* moves back from WAIT */
	__u64 wait_ns;	  /* time spent in WAIT before those returns */
	__u64 changed_ns; /* when the mode last changed (bpf_ktime_get_ns) */
};

/* What the controller tells the per-message program about the whole node. */
struct flow_config {
	__u32 node_over; /* node TCP memory above the budget: receivers past the floor wait on TCP */
	__u32 max_bound; /* the allowance's ceiling: --flow-growth-cap x (tcp_rmem max + tcp_wmem max) */
	__u32 retiring;	 /* keys in the retiring map: 0 spares every message the lookup */
	__u32 pad;
};

/* Why a socket moved to TCP for good (struct accel_event.reason). */
enum accel_reason {
	ACCEL_REASON_PEER_MISSING = 1,
	ACCEL_REASON_PEER_GONE = 2,
	ACCEL_REASON_SMALL_WRITES = 3,
	ACCEL_REASON_NO_PEER_INFO = 4,
	ACCEL_REASON_RETIRING = 5, /* its peer is being released */
	ACCEL_REASON_SHUT = 6,	   /* it sent its FIN: TCP answers its sends with EPIPE */
};

/* What bpf/probe.c answers when it cannot read a socket's queue. */
#define ACCEL_PROBE_UNKNOWN  0xffffffffU /* no address recorded for the key */
#define ACCEL_PROBE_NO_PSOCK 0xfffffffeU /* the socket is in no socket map */

/* What the datapath tells the controller, at once, through a ring buffer:
 * this socket (its own key) moved to TCP for good, so its connection may
 * leave the sockhash (release, accel/release.py). */
struct accel_event {
	struct sock_key key;
	__u32 reason; /* enum accel_reason */
	__u32 pad;
	__u64 ns;
};

/* Counters, one per reason, per CPU. Every early return counts somewhere. */
struct stats {
	/* sockops */
	__u64 established;	  /* ESTABLISHED callbacks seen */
	__u64 inserted;		  /* sockets put into the sockhash */
	__u64 skipped_not_local;  /* peer address is not a local endpoint */
	__u64 skipped_policy;	  /* endpoint opted out or ambiguous */
	__u64 skipped_early_data; /* data moved before ESTABLISHED (TFO) */
	__u64 skipped_family;	  /* neither AF_INET nor AF_INET6 */
	__u64 insert_failed;	  /* sockhash full (E2BIG) */
	__u64 insert_exists;	  /* key already present: this socket was inserted by another accel instance */
	__u64 insert_error;	  /* any other refusal (e.g. a ULP such as kTLS) */
	__u64 insert_no_state;	  /* per-socket state could not be allocated: left on TCP */
	/* sk_msg */
	__u64 redirected_msgs;
	__u64 redirected_bytes;
	__u64 fallback_peer_missing; /* first send found no peer: socket stays on TCP */
	__u64 fallback_peer_gone;    /* peer left the map later: socket moves to TCP */
	__u64 fallback_sticky;	     /* sent by TCP because an earlier byte was */
	__u64 fallback_no_state;     /* per-socket state could not be allocated */
	__u64 fallback_bytes;	     /* bytes of all fallback messages */
	__u64 fallback_wait;	     /* sent by TCP while the receiver holds more than TCP would let it */
	__u64 moved_wait;	     /* moves to WAIT: the receiver's queue passed its bound */
	__u64 returned;		     /* moves back from WAIT to redirect, order-safe */
	__u64 wait_ns;		     /* total time spent in WAIT by sockets that returned */
	__u64 fallback_no_peer_info; /* the peer's address was not known: socket moves to TCP */
	__u64 fallback_retiring;     /* the peer's connection is being released: socket moves to TCP */
	__u64 fallback_small_writes; /* a stream of small writes, where TCP is faster: socket moves to TCP */
	__u64 events_lost;	     /* events the ring buffer had no room for (their connections stay in the map) */
	__u64 fallback_shut;	     /* a send after the socket's own FIN: TCP fails it (EPIPE) */
};

/* A socket's own key from its peer's (struct sock_state.peer): the same
 * connection seen from the other end. */
static __always_inline void accel_mirror_key(const struct sock_key *peer, struct sock_key *out)
{
	out->netns = peer->netns;
	__builtin_memcpy(out->local_ip, peer->remote_ip, sizeof(out->local_ip));
	__builtin_memcpy(out->remote_ip, peer->local_ip, sizeof(out->remote_ip));
	out->local_port = peer->remote_port;
	out->remote_port = peer->local_port;
	out->local_seq = peer->remote_seq;
	out->remote_seq = peer->local_seq;
}

#define ACCEL_AF_INET  2
#define ACCEL_AF_INET6 10

/*
 * Fill addresses and ports of a key from a context that has the usual
 * family/local_ip4/remote_ip4/local_ip6/remote_ip6/local_port/remote_port
 * fields (struct bpf_sock_ops and struct sk_msg_md both do).
 *
 * The ip6 words are read one at a time through volatile: clang otherwise
 * merges two of them into a 64-bit context load, which the verifier rejects.
 * remote_port holds the port in network order in the upper 16 bits (on little
 * endian), local_port holds it in host order.
 *
 * Returns 0 on success, -1 for a family we do not handle.
 */
#define ACCEL_FILL_TUPLE(key, ctx)                                                      \
	({                                                                              \
		int __ret = 0;                                                          \
		__u32 __family = (ctx)->family;                                         \
		if (__family == ACCEL_AF_INET) {                                        \
			(key)->local_ip[0] = 0;                                         \
			(key)->local_ip[1] = 0;                                         \
			(key)->local_ip[2] = bpf_htonl(0x0000ffff);                     \
			(key)->local_ip[3] = (ctx)->local_ip4;                          \
			(key)->remote_ip[0] = 0;                                        \
			(key)->remote_ip[1] = 0;                                        \
			(key)->remote_ip[2] = bpf_htonl(0x0000ffff);                    \
			(key)->remote_ip[3] = (ctx)->remote_ip4;                        \
		} else if (__family == ACCEL_AF_INET6) {                                \
			(key)->local_ip[0] = *(volatile __u32 *)&(ctx)->local_ip6[0];   \
			(key)->local_ip[1] = *(volatile __u32 *)&(ctx)->local_ip6[1];   \
			(key)->local_ip[2] = *(volatile __u32 *)&(ctx)->local_ip6[2];   \
			(key)->local_ip[3] = *(volatile __u32 *)&(ctx)->local_ip6[3];   \
			(key)->remote_ip[0] = *(volatile __u32 *)&(ctx)->remote_ip6[0]; \
			(key)->remote_ip[1] = *(volatile __u32 *)&(ctx)->remote_ip6[1]; \
			(key)->remote_ip[2] = *(volatile __u32 *)&(ctx)->remote_ip6[2]; \
			(key)->remote_ip[3] = *(volatile __u32 *)&(ctx)->remote_ip6[3]; \
		} else {                                                                \
			__ret = -1;                                                     \
		}                                                                       \
		(key)->local_port = (ctx)->local_port;                                  \
		(key)->remote_port = bpf_ntohl((ctx)->remote_port);                     \
		__ret;                                                                  \
	})

/* 127.0.0.0/8 (v4-mapped) or ::1: traffic that never leaves its namespace. */
static __always_inline int accel_is_loopback(const __u32 ip[4])
{
	if (ip[0] != 0 || ip[1] != 0)
		return 0;
	if (ip[2] == bpf_htonl(0x0000ffff))
		return (ip[3] & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000);
	return ip[2] == 0 && ip[3] == bpf_htonl(1);
}

static __always_inline int accel_same_ip(const __u32 a[4], const __u32 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* A connection stays inside its namespace when it is loopback or when a socket
 * talks to one of its own addresses; only then is the netns cookie part of the
 * key (see struct sock_key). Both ends compute the same answer. */
static __always_inline int accel_namespace_local(const struct sock_key *key)
{
	return accel_is_loopback(key->remote_ip) || accel_same_ip(key->local_ip, key->remote_ip);
}

#endif /* ACCEL_H */
