"""A node with hundreds of network namespaces: every address is tracked
exactly (content, never timing), the controller holds one descriptor per
namespace and no helper process, and namespaces that come and go within
milliseconds leave nothing behind. 300 namespaces are past the point where
the controller once spun a core (select() on more than 1024 descriptors)."""

from __future__ import annotations

import os

import pytest
from pyroute2 import IPRoute

from accel.sandbox import create_netns, remove_netns, scratch
from accel.sandbox.topology import FleetTopology
from tests.waiting import wait_for

PODS = 300


def controller_fds(ctl) -> int:
    return len(os.listdir(f"/proc/{ctl.proc.pid}/fd"))


def controller_children(ctl) -> list[str]:
    with open(f"/proc/{ctl.proc.pid}/task/{ctl.proc.pid}/children") as f:
        return f.read().split()


@pytest.mark.timeout(900)
def test_hundreds_of_namespaces_are_tracked_exactly_with_one_descriptor_each(fresh_env):
    ctl = fresh_env
    with FleetTopology(PODS, subnet=201) as fleet:
        ctl.start()
        wait_for(lambda: set(fleet.addresses) <= set(ctl.endpoints()), f"all {PODS} pod addresses", timeout=120)
        fds = controller_fds(ctl)
        # One netlink socket per namespace, plus what any process holds
        # (bcc, the metrics socket, pins, the inotify and epoll fds).
        assert fds <= PODS + 2 + 80, fds
        assert controller_children(ctl) == [], "no helper process per namespace"

        # Added and removed pods are tracked exactly, address by address.
        added = [fleet.add_pod() for _ in range(20)]
        wait_for(lambda: set(added) <= set(ctl.endpoints()), "added pods", timeout=30)
        for addr in added[:10]:
            fleet.remove_pod(addr)
        wait_for(lambda: not set(added[:10]) & set(ctl.endpoints()), "removed pods", timeout=30)
        assert set(added[10:]) <= set(ctl.endpoints())
        # An address added to a running pod, and removed again.
        ns = fleet.names[added[10]]
        with IPRoute(netns=ns) as ipr:
            eth = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=eth, address="10.202.9.9", prefixlen=32)
            wait_for(lambda: "10.202.9.9" in ctl.endpoints(), "address added to a pod", timeout=30)
            ipr.addr("del", index=eth, address="10.202.9.9", prefixlen=32)
        wait_for(lambda: "10.202.9.9" not in ctl.endpoints(), "address removed from a pod", timeout=30)
        pod_addrs = set(fleet.addresses)
        assert pod_addrs <= set(ctl.endpoints())
        assert controller_fds(ctl) <= fds + 10 + 2, "descriptors follow the namespaces, none leak"


@pytest.mark.timeout(600)
def test_namespaces_that_come_and_go_within_milliseconds_leave_nothing(fresh_env):
    ctl = fresh_env
    ctl.start()
    wait_for(lambda: controller_fds(ctl) > 0, "controller up")
    base = controller_fds(ctl)
    survivors = []
    for i in range(200):
        ns = scratch(f"blink{i}", netns=True)
        create_netns(ns)
        addr = f"10.203.{i // 250}.{i % 250 + 1}"
        with IPRoute(netns=ns) as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address=addr, prefixlen=32)
        if i % 40 == 0:
            survivors.append((ns, addr))  # a few stay: they must be tracked
        else:
            remove_netns(ns)
    try:
        wait_for(lambda: {a for _, a in survivors} <= set(ctl.endpoints()), "surviving namespaces' addresses", timeout=30)
        gone = {f"10.203.{i // 250}.{i % 250 + 1}" for i in range(200)} - {a for _, a in survivors}
        wait_for(lambda: not gone & set(ctl.endpoints()), "no address of a vanished namespace", timeout=30)
        wait_for(lambda: controller_fds(ctl) <= base + len(survivors) + 2, f"descriptors back to {base} + survivors", timeout=30)
    finally:
        for ns, _ in survivors:
            remove_netns(ns)
    wait_for(lambda: controller_fds(ctl) <= base + 2, "descriptors of removed survivors released", timeout=30)
