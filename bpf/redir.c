/* SPDX-License-Identifier: GPL-2.0 */
/*
 * redir.c - sk_msg verdict: hand each sendmsg() to the peer socket's receive
 * queue when that cannot reorder bytes, else let it go through TCP.
 *
 * Ordering (invariant 4): the receiver reads redirected bytes before its TCP
 * queue, so once any byte of a socket has gone through TCP, no later byte may
 * be redirected. The first message decides; a later miss (peer gone) moves the
 * socket to TCP for good, which is order-safe in that direction.
 *
 * Fail open (invariant 5): every path returns SK_PASS. A miss of
 * bpf_msg_redirect_hash() returns SK_DROP, which would fail sendmsg() with
 * EACCES, so its value is only used to decide, never returned.
 */
#include "maps.h"

static __always_inline struct stats *stats_get(void)
{
	u32 zero = 0;
	return stats.lookup(&zero);
}

/* Per-socket mode; not pinned on purpose: a socket keeps the sk_msg program
 * (and so this map) it was inserted with, across controller restarts. */
BPF_SK_STORAGE(sock_states, struct sock_state);

#ifndef ACCEL_NO_SMALL_WRITES
/*
 * Streams of small writes go back to TCP, where TCP is faster.
 *
 * Each redirected message costs one program run and one receiver wake-up,
 * where TCP coalesces small writes (Nagle, autocork): a sender that streams
 * small writes is slower redirected than on TCP (the benchmark measured 0.6x
 * at 64 B). Such a socket moves to TCP for good, which is order-safe.
 *
 * A stream is ACCEL_BURST_MSGS messages in a row, each smaller than the limit
 * (same-namespace TCP is cheap, so its limit is higher), each sent within
 * ACCEL_BURST_GAP_NS of the previous one, with nothing sent by the other end
 * in between. The last condition keeps request/response traffic (one message
 * each way per round trip) redirected however fast the machine is: both ends
 * write who sent into a slot that the connection hashes to, so a reply shows
 * as the other end. Two connections sharing a slot only reset
 * each other's count: the error is towards staying redirected.
 */
struct conn_slot {
	__u32 last_sender; /* sender id (local port ^ address) of the end that sent last */
};
BPF_ARRAY(conn_slots, struct conn_slot, ACCEL_CONN_SLOTS);

static __always_inline int small_write_stream(struct sock_state *st, const struct sock_key *self, int ns_local, __u32 size)
{
	/* The same index from both ends: XOR does not care about direction. */
	__u32 idx = (self->local_port ^ self->remote_port ^ self->local_ip[3] ^ self->remote_ip[3]) & (ACCEL_CONN_SLOTS - 1);
	__u32 limit = ns_local ? ACCEL_SMALL_LOCAL : ACCEL_SMALL_REMOTE;
	/* The two ends differ in port (same address) or in address (a client
	 * may bind the server's port number). */
	__u32 me = self->local_port ^ self->local_ip[3];
	struct conn_slot *slot = conn_slots.lookup(&idx);
	__u64 now = bpf_ktime_get_ns();
	int alone = slot && slot->last_sender == me;

	if (slot && !alone) /* store only on a change: a one-way stream does not dirty the line */
		slot->last_sender = me;
	if (size < limit && alone && now - st->last_ns < ACCEL_BURST_GAP_NS)
		st->burst++;
	else
		st->burst = 0;
	st->last_ns = now;
	return st->burst >= ACCEL_BURST_MSGS;
}
#endif

int accel_redir(struct sk_msg_md *msg)
{
	struct stats *s = stats_get(); /* one lookup per message, not one per counter */
	struct sock_state *st;
	struct sock_key peer = {};
	struct sock_key self = {};
	__u32 size = msg->size;
	long verdict;

	st = sock_states.sk_storage_get(msg->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		/* Without state we cannot promise order: never redirect. */
		STATS_ADD(s, fallback_no_state, 1);
		STATS_ADD(s, fallback_bytes, size);
		return SK_PASS;
	}
	if (st->mode == ACCEL_MODE_TCP) {
		STATS_ADD(s, fallback_sticky, 1);
		STATS_ADD(s, fallback_bytes, size);
		return SK_PASS;
	}

	if (ACCEL_FILL_TUPLE(&self, msg) < 0) {
		st->mode = ACCEL_MODE_TCP;
		STATS_ADD(s, fallback_sticky, 1);
		STATS_ADD(s, fallback_bytes, size);
		return SK_PASS;
	}
	/* The peer's key is ours with the ends swapped. */
	__builtin_memcpy(peer.local_ip, self.remote_ip, sizeof(peer.local_ip));
	__builtin_memcpy(peer.remote_ip, self.local_ip, sizeof(peer.remote_ip));
	peer.local_port = self.remote_port;
	peer.remote_port = self.local_port;
	int ns_local = accel_namespace_local(&self); /* once per message: used twice */
	if (ns_local)
		peer.netns = bpf_get_netns_cookie(msg);

	/* The controller saw the peer's queue hold more than TCP would allow. */
	u32 zero = 0;
	u32 *guarded = guard_active.lookup(&zero);
	if (guarded && *guarded && backlog_guard.lookup(&peer)) {
		st->mode = ACCEL_MODE_TCP;
		STATS_ADD(s, fallback_backlog, 1);
		STATS_ADD(s, fallback_bytes, size);
		return SK_PASS;
	}

#ifndef ACCEL_NO_SMALL_WRITES
	if (small_write_stream(st, &self, ns_local, size)) {
		st->mode = ACCEL_MODE_TCP;
		STATS_ADD(s, fallback_small_writes, 1);
		STATS_ADD(s, fallback_bytes, size);
		return SK_PASS;
	}
#endif

	verdict = sock_hash.msg_redirect_hash(msg, &peer, BPF_F_INGRESS);
	if (verdict != SK_PASS) {
		if (st->mode == ACCEL_MODE_NEW)
			STATS_ADD(s, fallback_peer_missing, 1);
		else
			STATS_ADD(s, fallback_peer_gone, 1);
		STATS_ADD(s, fallback_bytes, size);
		st->mode = ACCEL_MODE_TCP;
		return SK_PASS;
	}
	if (st->mode == ACCEL_MODE_NEW) /* store once, not on every send */
		st->mode = ACCEL_MODE_REDIRECT;
	STATS_ADD(s, redirected_msgs, 1);
	STATS_ADD(s, redirected_bytes, size);
	return SK_PASS;
}
