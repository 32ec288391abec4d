/* SPDX-License-Identifier: GPL-2.0 */
/*
 * redir.c - sk_msg verdict: hand each sendmsg() to the peer socket's receive
 * queue when that cannot reorder bytes, else let it go through TCP.
 *
 * Ordering (invariant 4): the receiver reads redirected bytes before its TCP
 * queue, so a byte may be redirected only when no byte this socket sent
 * through TCP is still unread at the receiver. A first send that finds no
 * peer, a peer that left, or a stream of small writes moves the socket to TCP
 * for good (order-safe in that direction).
 *
 * Flow control (docs/DESIGN.md): a receiver may hold about what TCP would let
 * the connection queue. Past that, the sender's messages go through TCP
 * (WAIT), whose own flow control then blocks it or gives it EAGAIN; the
 * sender comes back to the fast path once the receiver has read every byte
 * that went through TCP, which its own send path checks with its socket
 * locked (no other send can slip a TCP byte in between).
 *
 * Fail open (invariant 5): every path returns SK_PASS. A miss of
 * bpf_msg_redirect_hash() returns SK_DROP, which would fail sendmsg() with
 * EACCES, so its value is only used to decide, never returned.
 */
#include "maps.h"
#include "kread.h"

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

/* What TCP would let this connection queue: the receiver's receive buffer
 * plus our send buffer, both as the kernel has sized them now (an
 * application's SO_RCVBUF/SO_SNDBUF included), or more once the allowance
 * grew (below). */
static __always_inline __u64 flow_bound(const struct sock_state *st)
{
	__u64 base = (__u64)(__s32)read_u32(st->peer_sk, ACCEL_OFF_SOCK_SK_RCVBUF) +
		     (__u64)(__s32)read_u32(st->self, ACCEL_OFF_SOCK_SK_SNDBUF);
	__u64 allowance = st->allowance ? st->allowance : ACCEL_FLOW_START;

	return allowance > base ? allowance : base;
}

/*
 * Whether the receiver holds its bound, so that this message must wait on
 * TCP. The bound is checked before a message, not after it, as TCP accepts a
 * write into whatever room is left: one message may take a receiver past it.
 *
 * TCP grows a connection's buffers while its reader keeps up (autotuning);
 * redirected bytes never pass through it, so the sockets keep their first
 * sizes. The datapath grows an allowance of its own instead: at the bound, a
 * receiver seen reading within the last ACCEL_READER_ACTIVE_NS is keeping up
 * as autotuning would see it, and the allowance doubles, up to the
 * controller's ceiling (cfg->max_bound: by default twice what TCP's
 * autotuning could reach, since each wait costs a retransmission timeout,
 * docs/DESIGN.md); a receiver that has not read makes the sender wait. So a
 * paused reader holds about what TCP would first give it, a busy one at most
 * twice what TCP would grow to.
 */
static __always_inline int receiver_over(struct sock_state *st, const struct flow_config *cfg, __u64 queued, __u64 now)
{
	__u64 bound;

	if (queued <= ACCEL_FLOW_FLOOR)
		return 0;
	if (cfg && cfg->node_over)
		return 1;
	bound = flow_bound(st);
	if (queued < bound)
		return 0;
	if (now - st->read_ns < ACCEL_READER_ACTIVE_NS && cfg && bound < cfg->max_bound) {
		bound <<= 1;
		st->allowance = bound < cfg->max_bound ? bound : cfg->max_bound;
		return 0;
	}
	return 1;
}

/* A waiting socket may redirect again only when the receiver has read every
 * byte we sent through TCP: our write_seq (stable: we hold our socket lock)
 * equals its copied_seq (only grows), so nothing of ours is unread or in
 * flight; and the receiver's queue is back under half its bound. */
static __always_inline int may_return(const struct sock_state *st, const struct flow_config *cfg, __u64 queued)
{
#ifdef ACCEL_DEBUG
	bpf_trace_printk("accel: wait copied %u write %u queued %llu\n",
			 read_u32(st->peer_sk, ACCEL_OFF_TCP_SOCK_COPIED_SEQ),
			 read_u32(st->self, ACCEL_OFF_TCP_SOCK_WRITE_SEQ), queued);
#endif
	if (read_u32(st->peer_sk, ACCEL_OFF_TCP_SOCK_COPIED_SEQ) != read_u32(st->self, ACCEL_OFF_TCP_SOCK_WRITE_SEQ))
		return 0;
	if (queued <= ACCEL_FLOW_FLOOR)
		return 1;
	if (cfg && cfg->node_over)
		return 0;
	return queued <= (flow_bound(st) >> ACCEL_RETURN_SHIFT);
}

/*
 * The socket changed mode: `accel conns` shows it (conn_flows, by our own
 * key). Only on a change, never per message; the entry is ours alone (our
 * socket lock is held), so its counts need no atomics. A map that is full
 * evicts its oldest entry (LRU): only history is lost, never a decision, as
 * nothing on the datapath reads this map.
 */
static __always_inline void note_mode(const struct sock_key *self, __u32 mode, __u32 reason, __u64 now, __u64 waited)
{
	struct conn_flow fresh = {};
	struct conn_flow *cf = conn_flows.lookup_or_try_init((struct sock_key *)self, &fresh);

	if (!cf)
		return;
	cf->mode = mode;
	cf->changed_ns = now;
	if (mode == ACCEL_MODE_WAIT)
		cf->waits++;
	else if (mode == ACCEL_MODE_REDIRECT) {
		cf->returns++;
		cf->wait_ns += waited;
	} else if (mode == ACCEL_MODE_TCP)
		cf->reason = reason;
}

/* The socket leaves the fast path for good (order-safe), and the controller
 * hears of it at once: its connection can then leave the sockhash. */
static __always_inline void tcp_for_good(struct stats *s, struct sock_state *st, __u32 reason)
{
	struct accel_event ev = {};

	st->mode = ACCEL_MODE_TCP;
	accel_mirror_key(&st->peer, &ev.key);
	ev.reason = reason;
	ev.ns = bpf_ktime_get_ns();
	note_mode(&ev.key, ACCEL_MODE_TCP, reason, ev.ns, 0);
	if (events.ringbuf_output(&ev, sizeof(ev), 0)) /* full: that connection is not released */
		STATS_ADD(s, events_lost, 1);
}

/* Our own key, for note_mode() on the flow-control changes. */
static __always_inline void note_flow(const struct sock_state *st, __u32 mode, __u64 now, __u64 waited)
{
	struct sock_key self;

	accel_mirror_key(&st->peer, &self);
	note_mode(&self, mode, 0, now, waited);
}

/* No peer to redirect to: on a first send the connection never had one
 * (its other end is not accelerated); later, ``later`` says what was lost
 * (the peer's address, or the peer itself). Either way, TCP for good. */
static __always_inline void no_peer(struct stats *s, struct sock_state *st, __u32 later, __u32 size)
{
	__u32 reason = st->mode == ACCEL_MODE_NEW ? ACCEL_REASON_PEER_MISSING : later;

	if (reason == ACCEL_REASON_PEER_MISSING)
		STATS_ADD(s, fallback_peer_missing, 1);
	else if (reason == ACCEL_REASON_PEER_GONE)
		STATS_ADD(s, fallback_peer_gone, 1);
	else
		STATS_ADD(s, fallback_no_peer_info, 1);
	STATS_ADD(s, fallback_bytes, size);
	tcp_for_good(s, st, reason);
}

int accel_redir(struct sk_msg_md *msg)
{
	struct stats *s = stats_get(); /* one lookup per message, not one per counter */
	struct bpf_sock *sk = msg->sk;
	struct sock_state *st;
	__u32 size = msg->size;
	__u64 *ptr;
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

	/* A socket that sent its FIN (shutdown(SHUT_WR)) may send nothing more:
	 * TCP fails the send with EPIPE, where a redirect would deliver bytes
	 * after the peer's EOF. The states that may still send are ESTABLISHED
	 * and CLOSE_WAIT (only the peer shut down). One ctx load per message. */
	if (sk->state != BPF_TCP_ESTABLISHED && sk->state != BPF_TCP_CLOSE_WAIT) {
		STATS_ADD(s, fallback_shut, 1);
		STATS_ADD(s, fallback_bytes, size);
		tcp_for_good(s, st, ACCEL_REASON_SHUT);
		return SK_PASS;
	}

	/* The peer's address, once: its sockops recorded it before inserting it,
	 * so a peer that is in the sockhash has one (LRU eviction aside). */
	if (!st->peer_sk) {
		ptr = sock_ptrs.lookup(&st->peer);
		if (!ptr) {
			no_peer(s, st, ACCEL_REASON_NO_PEER_INFO, size);
			return SK_PASS;
		}
		st->peer_sk = *ptr;
	}

	__u32 zero = 0;
	struct flow_config *cfg = flow.lookup(&zero);

	/* The peer's connection is being released: nothing more may land in it. */
	if (cfg && cfg->retiring && retiring.lookup(&st->peer)) {
		STATS_ADD(s, fallback_retiring, 1);
		STATS_ADD(s, fallback_bytes, size);
		tcp_for_good(s, st, ACCEL_REASON_RETIRING);
		return SK_PASS;
	}

#ifndef ACCEL_NO_FLOW_CONTROL /* only to measure what flow control costs */
	__u64 queued = psock_queued(st->peer_sk);
	__u64 now = bpf_ktime_get_ns();

	if (queued < st->q_expect) /* the peer read since our last redirect */
		st->read_ns = now;
	if (st->mode == ACCEL_MODE_WAIT) {
		if (!may_return(st, cfg, queued)) {
			STATS_ADD(s, fallback_wait, 1);
			STATS_ADD(s, fallback_bytes, size);
			return SK_PASS;
		}
	} else if (receiver_over(st, cfg, queued, now)) {
		st->mode = ACCEL_MODE_WAIT;
		st->wait_since = now;
		note_flow(st, ACCEL_MODE_WAIT, now, 0);
		STATS_ADD(s, moved_wait, 1);
		STATS_ADD(s, fallback_wait, 1);
		STATS_ADD(s, fallback_bytes, size);
		return SK_PASS;
	}
#endif

#ifndef ACCEL_NO_SMALL_WRITES
	if (small_write_stream(st, size)) {
		tcp_for_good(s, st, ACCEL_REASON_SMALL_WRITES);
		STATS_ADD(s, fallback_small_writes, 1);
		STATS_ADD(s, fallback_bytes, size);
		return SK_PASS;
	}
#endif

	/* The peer key holds both sequence numbers of this connection: only the
	 * socket at its other end can match it (accel.h, struct sock_key). */
	verdict = sock_hash.msg_redirect_hash(msg, &st->peer, BPF_F_INGRESS);
	if (verdict != SK_PASS) {
		no_peer(s, st, ACCEL_REASON_PEER_GONE, size);
		return SK_PASS;
	}
	if (st->mode == ACCEL_MODE_WAIT) {
		__u64 back = bpf_ktime_get_ns();

		STATS_ADD(s, returned, 1);
		STATS_ADD(s, wait_ns, back - st->wait_since);
		note_flow(st, ACCEL_MODE_REDIRECT, back, back - st->wait_since);
	}
#ifndef ACCEL_NO_FLOW_CONTROL
	st->q_expect = queued + size;
#endif
	if (st->mode != ACCEL_MODE_REDIRECT) /* store on a change, not on every send */
		st->mode = ACCEL_MODE_REDIRECT;
	STATS_ADD(s, redirected_msgs, 1);
	STATS_ADD(s, redirected_bytes, size);
	return SK_PASS;
}
