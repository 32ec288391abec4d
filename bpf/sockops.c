/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sockops.c - decide at ESTABLISHED whether a TCP socket joins the fast path.
 *
 * A socket is inserted into the sockhash only when its peer is on this node
 * (invariant 3): loopback, its own address, or an address the controller put
 * in the endpoint map with policy ACCELERATE. Everything else is left alone
 * and counted by reason. Insertion never overwrites (BPF_NOEXIST). The key
 * holds both initial sequence numbers (accel.h, struct sock_key), so a key
 * already present can only be this very socket, inserted by another
 * instance's sockops on the same maps.
 */
#include <uapi/linux/errno.h>
#include <uapi/linux/tcp.h>

#include "maps.h"

static __always_inline struct stats *stats_get(void)
{
	u32 zero = 0;
	return stats.lookup(&zero);
}

static __always_inline int remote_policy_ok(struct stats *s, struct sock_key *key, int ns_local)
{
	struct endpoint_key ep = {};
	struct endpoint_value *val;

	/* The local address may be opted out even when the peer is not. */
	__builtin_memcpy(ep.ip, key->local_ip, sizeof(ep.ip));
	val = endpoints.lookup(&ep);
	if (val && val->policy == ACCEL_POLICY_OPT_OUT) {
		STATS_ADD(s, skipped_policy, 1);
		return 0;
	}

	if (ns_local)
		return 1;

	__builtin_memcpy(ep.ip, key->remote_ip, sizeof(ep.ip));
	val = endpoints.lookup(&ep);
	if (!val) {
		STATS_ADD(s, skipped_not_local, 1);
		return 0;
	}
	if (val->policy != ACCEL_POLICY_ACCELERATE) {
		STATS_ADD(s, skipped_policy, 1);
		return 0;
	}
	return 1;
}

/* What sk_msg needs on every send, computed once here: the peer's key is
 * ours with the ends swapped, and the small-write slot is one both ends hash
 * to (XOR does not care about direction). */
static __always_inline void fill_state(struct sock_state *st, const struct sock_key *key, int ns_local)
{
	st->peer.netns = key->netns;
	__builtin_memcpy(st->peer.local_ip, key->remote_ip, sizeof(st->peer.local_ip));
	__builtin_memcpy(st->peer.remote_ip, key->local_ip, sizeof(st->peer.remote_ip));
	st->peer.local_port = key->remote_port;
	st->peer.remote_port = key->local_port;
	st->peer.local_seq = key->remote_seq;
	st->peer.remote_seq = key->local_seq;
	st->mode = ACCEL_MODE_NEW;
	st->burst = 0;
	st->last_ns = 0;
	st->allowance = 0;
	st->q_expect = 0;
	st->read_ns = 0;
	st->peer_sk = 0;
	st->wait_since = 0;
	st->slot = (key->local_port ^ key->remote_port ^ key->local_ip[3] ^ key->remote_ip[3] ^ key->local_seq ^
		    key->remote_seq) &
		   (ACCEL_CONN_SLOTS - 1);
	/* The two ends differ in port (same address) or in address (a client
	 * may bind the server's port number). */
	st->sender = key->local_port ^ key->local_ip[3];
	st->small_limit = ns_local ? ACCEL_SMALL_LOCAL : ACCEL_SMALL_REMOTE;
}

/*
 * While a socket waits on TCP (flow control), it may come back only once the
 * receiver has read every byte it sent through TCP; a TCP send buffer that
 * has grown to megabytes takes the receiver long to drain. So, unless the
 * application chose its own, an accelerated socket keeps at most
 * ACCEL_WAIT_NOTSENT_LOWAT bytes unsent in its TCP write queue: a redirecting
 * socket has none, so it only ever matters on TCP, where it is TCP's own
 * option (an application could have set it) and the sender blocks sooner.
 * Returns whether it set the limit.
 */
static __always_inline int limit_unsent(struct bpf_sock_ops *skops)
{
	int lowat = 0;

	if (bpf_getsockopt(skops, SOL_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat)) == 0 && lowat == 0) {
		lowat = ACCEL_WAIT_NOTSENT_LOWAT;
		return bpf_setsockopt(skops, SOL_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat)) == 0;
	}
	return 0;
}

/*
 * A socket on TCP for good never waits to come back, so the limit above only
 * costs it: with it, a released 64 B stream between pods ran at 0.71-0.89x
 * of plain TCP, without it 0.99-1.03x (benchmarks/RESULTS.md). sk_msg, which
 * makes the move, cannot set socket options; the first ACK of the socket's
 * TCP bytes runs this (RTT callback, asked for only by sockets whose limit
 * is ours): once the socket is on TCP for good, its limit goes back to the
 * kernel's default (0: none) unless the application has set its own since,
 * and the callback is switched off, so that the socket then costs what a
 * plain one costs. While it redirects or waits, the run only looks at its
 * mode.
 */
static __always_inline void on_tcp_ack(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct sock_state *st;
	int none = 0, lowat = 0;

	if (!sk)
		return;
	st = sock_states.sk_storage_get(sk, 0, 0);
	if (st && st->mode != ACCEL_MODE_TCP)
		return;
	if (bpf_getsockopt(skops, SOL_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat)) == 0 &&
	    lowat == ACCEL_WAIT_NOTSENT_LOWAT)
		bpf_setsockopt(skops, SOL_TCP, TCP_NOTSENT_LOWAT, &none, sizeof(none));
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RTT_CB_FLAG);
}

static __always_inline void on_established(struct bpf_sock_ops *skops)
{
	struct stats *s = stats_get(); /* one lookup per program run */
	struct sock_key key = {};
	struct sock_state *st;
	struct bpf_sock *sk;
	int ns_local;
	long err;

	STATS_ADD(s, established, 1);

	if (ACCEL_FILL_TUPLE(&key, skops) < 0) {
		STATS_ADD(s, skipped_family, 1);
		return;
	}

	/* Data that moved before this callback (TCP Fast Open) went through TCP;
	 * redirected bytes sent later could overtake it (invariant 4). It would
	 * also move snd_nxt/rcv_nxt off the initial sequence numbers. */
	if (skops->data_segs_in > 0 || skops->data_segs_out > 0 || skops->bytes_received > 0) {
		STATS_ADD(s, skipped_early_data, 1);
		return;
	}

	ns_local = accel_namespace_local(&key);
	if (!remote_policy_ok(s, &key, ns_local))
		return;

	if (ns_local)
		key.netns = bpf_get_netns_cookie(skops);
	key.local_seq = skops->snd_nxt;
	key.remote_seq = skops->rcv_nxt;

	/* State first: a socket in the map without it could never redirect.
	 * sk_msg cannot run before both are done (the socket is locked here). */
	sk = skops->sk;
	if (!sk)
		return;
	st = sock_states.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		STATS_ADD(s, insert_no_state, 1);
		return;
	}
	fill_state(st, &key, ns_local);

	/* Our address, for the peer's flow-control reads (maps.h, sock_ptrs)
	 * and our own (write_seq, send buffer): only ever read through probe
	 * reads, as a number. */
	st->self = (__u64)sk;
	sock_ptrs.update(&key, &st->self);

	err = sock_hash.sock_hash_update(skops, &key, BPF_NOEXIST);
	if (err == 0) {
		/* Be told when the connection reaches CLOSE, to drop our address,
		 * and, if the unsent limit is ours, of ACKs (on_tcp_ack). */
		__u32 flags = BPF_SOCK_OPS_STATE_CB_FLAG;

		if (limit_unsent(skops))
			flags |= BPF_SOCK_OPS_RTT_CB_FLAG;
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | flags);
		STATS_ADD(s, inserted, 1);
		return;
	}
	if (err == -EEXIST) {
		/* With the sequence numbers in the key, only this very socket can
		 * hold it: another instance's sockops inserted it first. Its state
		 * is the one just written (the same map), so leave it. */
		STATS_ADD(s, insert_exists, 1);
		return;
	}
	if (err == -E2BIG || err == -ENOMEM)
		STATS_ADD(s, insert_failed, 1);
	else
		STATS_ADD(s, insert_error, 1);
	sock_ptrs.delete(&key);
	sock_states.sk_storage_delete(sk);
}

/* The connection reached CLOSE: no sender may use this socket's address any
 * more (it will be freed), and `accel conns` has nothing more to show of it.
 * Its own key is its peer's mirrored. */
static __always_inline void on_close(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct sock_state *st;
	struct sock_key self;

	if (!sk)
		return;
	st = sock_states.sk_storage_get(sk, 0, 0);
	if (!st)
		return;
	accel_mirror_key(&st->peer, &self);
	sock_ptrs.delete(&self);
	conn_flows.delete(&self);
}

int accel_sockops(struct bpf_sock_ops *skops)
{
#ifdef ACCEL_TEST_VERIFIER_REJECT
	/* Built only by the test of verifier-error reporting: a context read far
	 * out of bounds, which the verifier must refuse. */
	if (*(volatile __u32 *)((char *)skops + 4096))
		return 0;
#endif
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		on_established(skops);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		on_tcp_ack(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			on_close(skops);
		break;
	default:
		break;
	}
	return 1;
}
