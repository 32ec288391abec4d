"""The endpoint map follows the node's addresses in every network namespace
while the controller runs: addresses added and removed, namespaces created and
deleted, and an address in two namespaces marked ambiguous."""

from __future__ import annotations

from pyroute2 import IPRoute

from accel.abi import POLICY_ACCELERATE, POLICY_AMBIGUOUS
from accel.sandbox import create_netns, remove_netns, scratch
from tests.waiting import wait_for

from .traffic import connected_pair


def test_addresses_and_namespaces_tracked_live(accel_env, tmp_path):
    ns1 = scratch("ep1", netns=True)
    ns2 = scratch("ep2", netns=True)
    try:
        create_netns(ns1)
        with IPRoute(netns=ns1) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.addr("add", index=lo, address="10.217.0.1", prefixlen=32)
            ipr.addr("add", index=lo, address="fd00:217::1", prefixlen=128, flags=0x02)
        # A new namespace and its addresses appear.
        wait_for(lambda: {"10.217.0.1", "fd00:217::1"} <= set(accel_env.endpoints()), "new namespace's addresses")
        assert accel_env.endpoints()["10.217.0.1"] == POLICY_ACCELERATE

        # An address added while running appears; a removed one disappears.
        with IPRoute(netns=ns1) as ipr:
            ipr.addr("add", index=lo, address="10.217.0.2", prefixlen=32)
        wait_for(lambda: "10.217.0.2" in accel_env.endpoints(), "added address")
        with IPRoute(netns=ns1) as ipr:
            ipr.addr("del", index=lo, address="10.217.0.2", prefixlen=32)
        wait_for(lambda: "10.217.0.2" not in accel_env.endpoints(), "removed address")

        # The same address in a second namespace: ambiguous, never accelerated.
        create_netns(ns2)
        with IPRoute(netns=ns2) as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address="10.217.0.1", prefixlen=32)
        wait_for(lambda: accel_env.endpoints().get("10.217.0.1") == POLICY_AMBIGUOUS, "ambiguous address")

        # A connection inside ns2 to its own 10.217.0.1 is namespace-local: it
        # is accelerated, keyed with ns2's cookie, whatever ns1 holds.
        client, server = connected_pair("10.217.0.1", server_ns=ns2, client_ns=ns2)
        cookie = int.from_bytes(client.getsockopt(1, 71, 8), "little")
        key = (cookie, "10.217.0.1", client.getsockname()[1], "10.217.0.1", server.getsockname()[1])
        assert key in accel_env.sockets()
        client.close()
        server.close()

        # Deleting the second namespace makes the address unambiguous again.
        remove_netns(ns2)
        wait_for(lambda: accel_env.endpoints().get("10.217.0.1") == POLICY_ACCELERATE, "address back to one namespace")
        remove_netns(ns1)
        wait_for(lambda: "fd00:217::1" not in accel_env.endpoints(), "deleted namespace's addresses")
    finally:
        remove_netns(ns1)
        remove_netns(ns2)


def test_an_ambiguous_peer_is_not_inserted(accel_env, tmp_path):
    """Pod A talks to 10.218.0.2, an address that a second, unrelated namespace
    also holds: the key (netns 0) could match the wrong socket, so neither
    end of that connection is inserted."""
    from accel.sandbox import pods

    with pods(2, subnet=218) as topo:
        a, b = topo.pods
        other = f"{topo.prefix}-dup"
        create_netns(other)
        try:
            with IPRoute(netns=other) as ipr:
                ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address=b.ipv4, prefixlen=32)
            wait_for(lambda: accel_env.endpoints().get(b.ipv4) == POLICY_AMBIGUOUS, "ambiguous pod address")
            before = accel_env.counters()
            client, server = connected_pair(b.ipv4, server_ns=b.ns, client_ns=a.ns)
            client.sendall(b"hello")
            assert server.recv(10) == b"hello"
            after = accel_env.counters()
            # The client's peer is ambiguous: skipped by policy, not inserted.
            assert after["skipped_policy"] - before["skipped_policy"] >= 1
            assert (0, a.ipv4, client.getsockname()[1], b.ipv4, server.getsockname()[1]) not in accel_env.sockets()
            assert after["redirected_bytes"] == before["redirected_bytes"]
            client.close()
            server.close()
        finally:
            remove_netns(other)
