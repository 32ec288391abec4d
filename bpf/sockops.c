/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sockops.c - decide at ESTABLISHED whether a TCP socket joins the fast path.
 *
 * A socket is inserted into the sockhash only when its peer is on this node
 * (invariant 3): loopback, its own address, or an address the controller put
 * in the endpoint map with policy ACCELERATE. Everything else is left alone
 * and counted by reason. Insertion never overwrites (BPF_NOEXIST): a key that
 * is already present belongs to another live socket.
 */
#include "maps.h"

static __always_inline struct stats *stats_get(void)
{
	u32 zero = 0;
	return stats.lookup(&zero);
}

static __always_inline int remote_policy_ok(struct sock_key *key)
{
	struct endpoint_key ep = {};
	struct endpoint_value *val;

	/* The local address may be opted out even when the peer is not. */
	__builtin_memcpy(ep.ip, key->local_ip, sizeof(ep.ip));
	val = endpoints.lookup(&ep);
	if (val && val->policy == ACCEL_POLICY_OPT_OUT) {
		ACCEL_COUNT(skipped_policy);
		return 0;
	}

	if (accel_namespace_local(key))
		return 1;

	__builtin_memcpy(ep.ip, key->remote_ip, sizeof(ep.ip));
	val = endpoints.lookup(&ep);
	if (!val) {
		ACCEL_COUNT(skipped_not_local);
		return 0;
	}
	if (val->policy != ACCEL_POLICY_ACCELERATE) {
		ACCEL_COUNT(skipped_policy);
		return 0;
	}
	return 1;
}

static __always_inline void on_established(struct bpf_sock_ops *skops)
{
	struct sock_key key = {};
	int err;

	ACCEL_COUNT(established);

	if (ACCEL_FILL_TUPLE(&key, skops) < 0) {
		ACCEL_COUNT(skipped_family);
		return;
	}

	/* Data that moved before this callback (TCP Fast Open) went through TCP;
	 * redirected bytes sent later could overtake it (invariant 4). */
	if (skops->data_segs_in > 0 || skops->data_segs_out > 0 || skops->bytes_received > 0) {
		ACCEL_COUNT(skipped_early_data);
		return;
	}

	if (!remote_policy_ok(&key))
		return;

	if (accel_namespace_local(&key))
		key.netns = bpf_get_netns_cookie(skops);

	err = sock_hash.sock_hash_update(skops, &key, BPF_NOEXIST);
	if (err) {
		accel_dbg("accel: insert failed %d port %d\n", err, key.local_port);
		ACCEL_COUNT(insert_failed);
		return;
	}
	ACCEL_COUNT(inserted);
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
	default:
		break;
	}
	return 1;
}
