/* SPDX-License-Identifier: GPL-2.0 */
/*
 * maps.h - the pinned maps the programs share. bcc creates each one on the
 * first load and pins it; every later load (a second program file, a
 * restarted controller) opens the pin, so all programs of an instance, old
 * and new, use the same maps (docs/DESIGN.md, invariant 7). Their sizes are
 * a setting of the controller, fixed when first pinned.
 */
#ifndef ACCEL_MAPS_H
#define ACCEL_MAPS_H

#include "accel.h"
#include "tunables.h"

/* Fixed when the maps are first pinned, so the controller always passes
 * them (accel/datapath.py, Datapath.cflags), like the pin directory. */
#if !defined(ACCEL_PIN_DIR) || !defined(ACCEL_SOCKHASH_SIZE) || !defined(ACCEL_ENDPOINTS_SIZE)
#error "build through the controller: it defines ACCEL_PIN_DIR, ACCEL_SOCKHASH_SIZE and ACCEL_ENDPOINTS_SIZE"
#endif
/* Twice the sockets the sockhash holds: room for entries of sockets that
 * closed while no controller ran, before LRU eviction reaches a live one. */
#define ACCEL_SOCK_PTRS_SIZE (2 * ACCEL_SOCKHASH_SIZE)

/*
 * Offsets of the kernel's own struct fields that flow control reads, taken
 * by the controller from the running kernel's BTF (/sys/kernel/btf/vmlinux),
 * not from the headers bcc compiles with (they may be another kernel's).
 */
#if !defined(ACCEL_OFF_SOCK_SK_USER_DATA) || !defined(ACCEL_OFF_SOCK_SK_RCVBUF) ||   \
    !defined(ACCEL_OFF_SOCK_SK_SNDBUF) || !defined(ACCEL_OFF_TCP_SOCK_COPIED_SEQ) || \
    !defined(ACCEL_OFF_TCP_SOCK_WRITE_SEQ) || !defined(ACCEL_OFF_SK_PSOCK_MSG_TOT_LEN)
#error "build through the controller: it defines the ACCEL_OFF_* field offsets from the kernel's BTF"
#endif

/* bcc's BPF_SOCKHASH cannot be pinned and BPF_TABLE_PINNED("sockhash") lacks
 * the sockhash helpers, so declare the table struct as BPF_SOCKHASH does, in a
 * pinned section. */
struct sock_hash_table_t {
	struct sock_key key;
	__u64 leaf; /* 8 bytes: a lookup from userspace then returns the socket's cookie */
	int (*update)(struct sock_key *, __u64 *);
	int (*delete)(struct sock_key *);
	int (*sock_hash_update)(void *, void *, u64);
	int (*msg_redirect_hash)(void *, void *, u64);
	int (*sk_redirect_hash)(void *, void *, u64);
	u32 max_entries;
};
__attribute__((section("maps/sockhash:" ACCEL_PIN_DIR "/sock_hash"))) struct sock_hash_table_t sock_hash = {
    .max_entries = ACCEL_SOCKHASH_SIZE};
BPF_ANNOTATE_KV_PAIR(sock_hash, struct sock_key, __u64);

/* Per-socket state (struct sock_state), written by sockops, read by sk_msg.
 * Pinned so that both programs, compiled apart, share it, and so that a
 * restarted controller's programs see the state of sockets inserted before
 * it. Declared as BPF_SK_STORAGE does, in a pinned section. */
struct sock_states_table_t {
	int key;
	struct sock_state leaf;
	void *(*sk_storage_get)(void *, void *, int);
	int (*sk_storage_delete)(void *);
	u32 flags;
};
__attribute__((section("maps/sk_storage:" ACCEL_PIN_DIR "/sock_states"))) struct sock_states_table_t sock_states = {
    .flags = BPF_F_NO_PREALLOC};
BPF_ANNOTATE_KV_PAIR(sock_states, int, struct sock_state);

BPF_TABLE_PINNED("hash", struct endpoint_key, struct endpoint_value, endpoints, ACCEL_ENDPOINTS_SIZE,
		 ACCEL_PIN_DIR "/endpoints");

BPF_TABLE_PINNED("percpu_array", u32, struct stats, stats, 1, ACCEL_PIN_DIR "/stats");

/* Each accelerated socket's kernel address, by its key, written by its own
 * sockops at ESTABLISHED (before its insert) and removed when it reaches
 * TCP_CLOSE: how a sender finds the receiver's queue and sequence numbers.
 * LRU: an entry left behind while no controller ran (its sockops detached,
 * so no close callback) is evicted before any live one, which every message
 * of its peer touches. An address is only ever read through probe reads,
 * and a stale one can only lead to the safe direction (see redir.c). */
BPF_TABLE_PINNED("lru_hash", struct sock_key, __u64, sock_ptrs, ACCEL_SOCK_PTRS_SIZE, ACCEL_PIN_DIR "/sock_ptrs");

/* Release (accel/release.py): sockets of connections that are leaving the
 * sockhash, by key. A sender whose peer is listed moves to TCP for good at
 * its next message (order-safe), so that nothing more is redirected into a
 * socket the controller will remove. */
BPF_TABLE_PINNED("hash", struct sock_key, __u32, retiring, ACCEL_SOCKHASH_SIZE, ACCEL_PIN_DIR "/retiring");

/* Events to the controller (struct accel_event), declared as bcc's
 * BPF_RINGBUF_OUTPUT does, in a pinned section. */
struct events_table_t {
	int key;
	u32 leaf;
	int (*ringbuf_output)(void *, u64, u64);
	void *(*ringbuf_reserve)(u64);
	void (*ringbuf_discard)(void *, u64);
	void (*ringbuf_submit)(void *, u64);
	u32 max_entries;
};
__attribute__((section("maps/ringbuf:" ACCEL_PIN_DIR "/events"))) struct events_table_t events = {
    .max_entries = ACCEL_EVENTS_BYTES};

/* Each socket's changes of path (struct conn_flow, accel.h) by its own key,
 * for `accel conns`: written when a socket changes mode, removed at
 * TCP_CLOSE. LRU, sized like the sockhash: only sockets that changed mode
 * have an entry, and losing the oldest only loses history. */
BPF_TABLE_PINNED("lru_hash", struct sock_key, struct conn_flow, conn_flows, ACCEL_SOCKHASH_SIZE,
		 ACCEL_PIN_DIR "/conn_flows");

/* flow_config[0]: what the controller says about the node (struct flow_config). */
BPF_TABLE_PINNED("array", u32, struct flow_config, flow, 1, ACCEL_PIN_DIR "/flow");

/*
 * Counting, the one idiom: a program looks its per-CPU counters up once, at
 * the start of its run (each program file defines
 *     static __always_inline struct stats *stats_get(void)
 * with stats.lookup() in its own body: bcc rewrites map calls only in the
 * main source file, never in a header or inside a macro), then bumps fields
 * of that one pointer.
 */
#define STATS_ADD(s, field, n)             \
	do {                               \
		if (s)                     \
			(s)->field += (n); \
	} while (0)

#endif /* ACCEL_MAPS_H */
