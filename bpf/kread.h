/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kread.h - reads of kernel memory through addresses recorded by sockops
 * (sock_ptrs), at offsets from the running kernel's BTF.
 *
 * An address may be stale (its socket closed; a new socket may live there
 * now): every decision made from such a read is either towards TCP, or a
 * redirect, which the sockhash itself refuses unless the peer under our
 * exact key (its sequence numbers included) is there, alive, at that
 * address; the controller's release deletes only a key that is still in
 * the sockhash, whose socket therefore has not closed.
 */
#ifndef ACCEL_KREAD_H
#define ACCEL_KREAD_H

static __always_inline __u32 read_u32(__u64 base, __u32 off)
{
	__u32 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (void *)(base + off));
	return v;
}

static __always_inline __u64 read_u64(__u64 base, __u32 off)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (void *)(base + off));
	return v;
}

/* The socket's psock (sk_user_data, flags in its low 3 bits), or 0. */
static __always_inline __u64 sock_psock(__u64 sk)
{
	return read_u64(sk, ACCEL_OFF_SOCK_SK_USER_DATA) & ~7ULL;
}

/* Redirected bytes queued on a socket, not read yet: its psock's msg_tot_len. */
static __always_inline __u32 psock_queued(__u64 sk)
{
	__u64 psock = sock_psock(sk);

	return psock ? read_u32(psock, ACCEL_OFF_SK_PSOCK_MSG_TOT_LEN) : 0;
}

#endif /* ACCEL_KREAD_H */
