/* SPDX-License-Identifier: GPL-2.0 */
/*
 * probe.c - a socket's queued redirected bytes, for the controller's release
 * (accel/release.py). Never attached: the controller runs it on demand
 * (BPF_PROG_TEST_RUN) with a struct sock_key as the packet, and reads the
 * answer from its return value. A socket filter may read kernel memory
 * (bpf_probe_read_kernel, to a privileged loader) and can be run this way.
 *
 * It returns the psock's msg_tot_len of the socket sockops recorded under
 * that key (sock_ptrs), ACCEL_PROBE_UNKNOWN when no address is recorded, or
 * ACCEL_PROBE_NO_PSOCK when the socket is in no socket map. The caller stays
 * on the safe side for both: it deletes a key only on an answer of 0.
 */
#include "maps.h"
#include "kread.h"

int accel_probe_queue(struct __sk_buff *skb)
{
	struct sock_key key = {};
	__u64 *ptr, psock;

	if (bpf_skb_load_bytes(skb, 0, &key, sizeof(key)) < 0)
		return ACCEL_PROBE_UNKNOWN;
	ptr = sock_ptrs.lookup(&key);
	if (!ptr)
		return ACCEL_PROBE_UNKNOWN;
	psock = sock_psock(*ptr);
	if (!psock)
		return ACCEL_PROBE_NO_PSOCK;
	return psock_queued(*ptr);
}
