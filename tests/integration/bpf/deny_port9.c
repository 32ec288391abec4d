/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A program of a kind the datapath does not have (cgroup connect4), for the
 * test that adds a row to the program table: it refuses connect() to port 9
 * (discard) from the cgroup, which a test can observe from userspace. It
 * reads the instance's counters, as every accel program does, which makes it
 * recognisably one of the instance's programs.
 */
#include "maps.h"

static __always_inline struct stats *stats_get(void)
{
	u32 zero = 0;
	return stats.lookup(&zero);
}

int accel_test_deny9(struct bpf_sock_addr *ctx)
{
	struct stats *s = stats_get();

	if (s && ctx->user_port == bpf_htons(9))
		return 0; /* connect() fails with EPERM */
	return 1;
}
