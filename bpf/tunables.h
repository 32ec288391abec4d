/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tunables.h - every number the programs decide by, in one place, each with
 * the measurement or the reason behind it. A value here can be overridden at
 * build time (-D, e.g. `accel run --bpf-define`), which the benchmark uses to
 * measure a setting.
 */
#ifndef ACCEL_TUNABLES_H
#define ACCEL_TUNABLES_H

/*
 * The small-write rule (redir.c, small_write_stream): a socket that streams
 * small writes moves to TCP, which coalesces them (Nagle, autocork) where a
 * redirect costs one program run and one receiver wake-up per write.
 */

/* Bytes below which a write counts as small within one namespace. Loopback
 * TCP is cheap: redirect lost to it up to about 2 KiB writes in the benchmark
 * (64 B 0.55x, 1 KiB 0.68x, 16 KiB 1.9x of plain TCP). */
#ifndef ACCEL_SMALL_LOCAL
#define ACCEL_SMALL_LOCAL 2048
#endif

/* The same between pods (veth, bridge): TCP pays the whole stack there, so
 * redirect wins from much smaller writes (64 B 0.51x, 1 KiB 2.3x). */
#ifndef ACCEL_SMALL_REMOTE
#define ACCEL_SMALL_REMOTE 128
#endif

/* Small writes in a row, each within the gap below and with no reply in
 * between, before the socket moves: long enough that a burst of a request
 * protocol (a pipelined redis batch) is not taken for a stream. */
#ifndef ACCEL_BURST_MSGS
#define ACCEL_BURST_MSGS 64
#endif

/* Nanoseconds between two writes of a stream: a sender writing as fast as
 * it can on this machine issues a 64 B write every 2-5 us; 50 us leaves room
 * for a busy machine without counting think-time as streaming. */
#ifndef ACCEL_BURST_GAP_NS
#define ACCEL_BURST_GAP_NS 50000ULL
#endif

/* Slots for "who sent last" on a connection, hashed from its key: a power of
 * two (masked, not divided). 65536 slots of 4 bytes is 256 KiB; two
 * connections sharing a slot only reset each other's count. */
#ifndef ACCEL_CONN_SLOTS
#define ACCEL_CONN_SLOTS 65536
#endif

/* Receivers the backlog guard can list at once (accel/backlog.py): each one
 * holds more unread bytes than TCP would let it, so a few are expected, not
 * thousands; a full list only means further receivers wait for a slot. */
#ifndef ACCEL_GUARD_SIZE
#define ACCEL_GUARD_SIZE 4096
#endif

#endif /* ACCEL_TUNABLES_H */
