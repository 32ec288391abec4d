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
 * (64 B 0.55x, 1 KiB 0.68x, 16 KiB 1.9x of plain TCP). The crossover differs
 * between hosts, so the controller builds with its --small-write-local
 * (default: this value) and benchmarks/crossover.py measures a node's. */
#ifndef ACCEL_SMALL_LOCAL
#define ACCEL_SMALL_LOCAL 2048
#endif

/* The same between pods (veth, bridge): TCP pays the whole stack there, so
 * redirect wins from much smaller writes (64 B 0.51x, 1 KiB 2.3x). The
 * controller's --small-write-remote. */
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

/*
 * Flow control (redir.c, receiver_over): a receiver may hold about what TCP
 * would let the connection queue, its receive buffer plus the sender's send
 * buffer. Measured: a paused receiver then holds about what plain TCP lets
 * a sender queue, and a bulk stream between pods loses 3-4% against no bound
 * at all (docs/DESIGN.md).
 */

/* Queued bytes below which the bound is not even looked up: two probe
 * reads per message saved on every connection that keeps up. It must be
 * below any receive buffer an application may set (SO_RCVBUF doubles the
 * value asked for; the kernel's minimum is 2304). */
#ifndef ACCEL_FLOW_FLOOR
#define ACCEL_FLOW_FLOOR 4096
#endif

/* The allowance a connection starts with (it grows while the receiver
 * reads): room for a receiver to wake up and start reading before the
 * sender must wait, as TCP's first windows give it. A receiver that never
 * reads then lets the sender queue this plus what TCP itself queues after
 * the switch: about 1.6x what plain TCP lets it (measured). */
#ifndef ACCEL_FLOW_START
#define ACCEL_FLOW_START (512 << 10)
#endif

/* A receiver seen reading within this long (ns) counts as keeping up: at
 * its bound, its allowance grows instead of its sender waiting. A reader
 * that takes bursts (a thread sharing a lock, a loaded CPU) still counts;
 * a paused one does not. */
#ifndef ACCEL_READER_ACTIVE_NS
#define ACCEL_READER_ACTIVE_NS 10000000ULL
#endif

/* Unsent bytes an accelerated socket may keep in its TCP write queue
 * (TCP_NOTSENT_LOWAT, unless the application set its own): only sends
 * through TCP queue any, and the fewer there are when a waiting sender
 * pauses, the sooner the receiver has read them all and the sender may come
 * back. Measured (torture flow_control pattern, 12 connections): returns
 * from WAIT 1 of 5 without it, 4 of 5 with 128 KiB; far above a
 * loopback or veth bandwidth-delay product, so TCP itself is not slowed. */
#ifndef ACCEL_WAIT_NOTSENT_LOWAT
#define ACCEL_WAIT_NOTSENT_LOWAT (128 << 10)
#endif

/* A waiting socket returns once the receiver's queue fell to this share of
 * the bound (1/2): a little hysteresis, so that a reader hovering at the
 * bound does not make the sender switch on every message. */
#ifndef ACCEL_RETURN_SHIFT
#define ACCEL_RETURN_SHIFT 1
#endif

/* Room for events to the controller (a power of two, whole pages). An
 * event is 72 bytes and only a move to TCP for good makes one: 256 KiB holds
 * 3,600 of them between two reads of a controller that reads at once; a lost
 * one only means that connection is not released. */
#ifndef ACCEL_EVENTS_BYTES
#define ACCEL_EVENTS_BYTES (256 << 10)
#endif

#endif /* ACCEL_TUNABLES_H */
