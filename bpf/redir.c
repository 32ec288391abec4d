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
 * write who sent into a slot that the connection hashes to (sockops chose
 * it), so a reply shows as the other end. Two connections sharing a slot only
 * reset each other's count: the error is towards staying redirected.
 */
struct conn_slot {
	__u32 last_sender; /* sender id of the end that sent last */
};
BPF_ARRAY(conn_slots, struct conn_slot, ACCEL_CONN_SLOTS);

static __always_inline int small_write_stream(struct sock_state *st, __u32 size)
{
	__u32 idx = st->slot;
	struct conn_slot *slot = conn_slots.lookup(&idx);
	__u64 now = bpf_ktime_get_ns();
	int alone = slot && slot->last_sender == st->sender;

	if (slot && !alone) /* store only on a change: a one-way stream does not dirty the line */
		slot->last_sender = st->sender;
	if (size < st->small_limit && alone && now - st->last_ns < ACCEL_BURST_GAP_NS)
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
	struct bpf_sock *sk = msg->sk;
	struct sock_state *st;
	__u32 size = msg->size;
	long verdict;

	/* sockops wrote the state before inserting the socket; a socket without
	 * it (inserted by an instance with another state map) cannot promise
	 * order: never redirect. */
	st = sk ? sock_states.sk_storage_get(sk, 0, 0) : 0;
	if (!st) {
		STATS_ADD(s, fallback_no_state, 1);
		STATS_ADD(s, fallback_bytes, size);
		return SK_PASS;
	}
	if (st->mode == ACCEL_MODE_TCP) {
		STATS_ADD(s, fallback_sticky, 1);
		STATS_ADD(s, fallback_bytes, size);
		return SK_PASS;
	}

	/* The controller saw the peer's queue hold more than TCP would allow. */
	u32 zero = 0;
	u32 *guarded = guard_active.lookup(&zero);
	if (guarded && *guarded && backlog_guard.lookup(&st->peer)) {
		st->mode = ACCEL_MODE_TCP;
		STATS_ADD(s, fallback_backlog, 1);
		STATS_ADD(s, fallback_bytes, size);
		return SK_PASS;
	}

#ifndef ACCEL_NO_SMALL_WRITES
	if (small_write_stream(st, size)) {
		st->mode = ACCEL_MODE_TCP;
		STATS_ADD(s, fallback_small_writes, 1);
		STATS_ADD(s, fallback_bytes, size);
		return SK_PASS;
	}
#endif

	/* The peer key holds both sequence numbers of this connection: only the
	 * socket at its other end can match it (accel.h, struct sock_key). */
	verdict = sock_hash.msg_redirect_hash(msg, &st->peer, BPF_F_INGRESS);
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
