"""Network namespaces for sandboxes, built with pyroute2 and always torn
down: "pods" on a bridge that lives in its own "node" namespace, so the
host's network is never touched.

    pod0 --veth--+
                 br0 (in netns <prefix>-node)
    pod1 --veth--+
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute, netns

from .names import scratch

IFA_F_NODAD = 0x02


def _ipr(ns: str) -> IPRoute:
    return IPRoute(netns=ns)


def create_netns(name: str) -> None:
    netns.create(name)
    with _ipr(name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def remove_netns(name: str) -> None:
    with contextlib.suppress(Exception):
        netns.remove(name)


@dataclass
class Pod:
    ns: str
    ipv4: str
    ipv6: str


@dataclass
class Topology:
    prefix: str
    node: str
    pods: list[Pod] = field(default_factory=list)

    def close(self) -> None:
        for pod in self.pods:
            remove_netns(pod.ns)
        remove_netns(self.node)


def build_pods(count: int = 2, subnet: int = 213, prefix: str | None = None) -> Topology:
    """``count`` pods on one bridge, 10.<subnet>.0.<i+1>/24 and fd00:<subnet>::<i+1>/64."""
    prefix = prefix or scratch("pods", netns=True)
    topo = Topology(prefix=prefix, node=f"{prefix}-node")
    try:
        create_netns(topo.node)
        with _ipr(topo.node) as ipr:
            ipr.link("add", ifname="br0", kind="bridge")
            br = ipr.link_lookup(ifname="br0")[0]
            ipr.link("set", index=br, state="up")
            for i in range(count):
                pod = Pod(f"{prefix}-p{i}", f"10.{subnet}.0.{i + 1}", f"fd00:{subnet}::{i + 1}")
                create_netns(pod.ns)
                topo.pods.append(pod)
                ipr.link("add", ifname=f"h{i}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": pod.ns})
                host_end = ipr.link_lookup(ifname=f"h{i}")[0]
                ipr.link("set", index=host_end, master=br, state="up")
                with _ipr(pod.ns) as pipr:
                    eth = pipr.link_lookup(ifname="eth0")[0]
                    pipr.addr("add", index=eth, address=pod.ipv4, prefixlen=24)
                    pipr.addr("add", index=eth, address=pod.ipv6, prefixlen=64, flags=IFA_F_NODAD)
                    pipr.link("set", index=eth, state="up")
    except BaseException:
        topo.close()
        raise
    return topo


@contextlib.contextmanager
def pods(count: int = 2, subnet: int = 213) -> Iterator[Topology]:
    topo = build_pods(count, subnet)
    try:
        yield topo
    finally:
        topo.close()


@contextlib.contextmanager
def hidden_netns(path: str) -> Iterator[str]:
    """A namespace that no controller can see: not in /run/netns, no process
    in it, kept alive by a bind mount at ``path``. It stands for a host that is
    not on this node."""
    open(path, "w").close()
    subprocess.run(["unshare", f"--net={path}", "true"], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=False)
        with contextlib.suppress(OSError):
            os.unlink(path)


def plug_hidden(topo: Topology, path: str, ipv4: str, index: int = 9) -> None:
    """Connect a hidden namespace (see hidden_netns) to the topology's bridge."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with _ipr(topo.node) as ipr:
            ipr.link("add", ifname=f"x{index}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
            host_end = ipr.link_lookup(ifname=f"x{index}")[0]
            ipr.link("set", index=host_end, master=ipr.link_lookup(ifname="br0")[0], state="up")
    finally:
        os.close(fd)
    with _ipr(path) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        eth = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=eth, address=ipv4, prefixlen=24)
        ipr.link("set", index=eth, state="up")


class FleetTopology:
    """Many "pods" for scale measurements: ``count`` namespaces, each with a
    veth to one bridge (in a node namespace of its own) and an address in
    10.<subnet>.0.0/16. Pods can be added and removed while it stands; all
    of it goes on exit."""

    def __init__(self, count: int, subnet: int = 200, progress: Any = None) -> None:
        self.count, self.subnet = count, subnet
        self.prefix = scratch("fleet", netns=True)
        self.node = f"{self.prefix}-node"
        self.names: dict[str, str] = {}  # address -> namespace
        self._next = 0
        self._progress = progress or (lambda _msg: None)

    @property
    def addresses(self) -> list[str]:
        return list(self.names)

    def __enter__(self) -> FleetTopology:
        try:
            create_netns(self.node)
            with _ipr(self.node) as ipr:
                ipr.link("add", ifname="br0", kind="bridge")
                ipr.link("set", index=ipr.link_lookup(ifname="br0")[0], state="up")
            for i in range(self.count):
                if i % 100 == 0:
                    self._progress(f"building namespaces: {i}/{self.count}")
                self.add_pod()
        except BaseException:
            self.close()
            raise
        return self

    def add_pod(self) -> str:
        """One more pod; returns its address."""
        i = self._next
        self._next += 1
        ns = f"{self.prefix}-{i}"
        addr = f"10.{self.subnet}.{i // 250}.{i % 250 + 1}"
        create_netns(ns)
        self.names[addr] = ns
        with _ipr(self.node) as ipr:
            host_end = f"v{i}"
            ipr.link("add", ifname=host_end, kind="veth", peer={"ifname": "eth0", "net_ns_fd": ns})
            ipr.link("set", index=ipr.link_lookup(ifname=host_end)[0], master=ipr.link_lookup(ifname="br0")[0], state="up")
        with _ipr(ns) as pipr:
            eth = pipr.link_lookup(ifname="eth0")[0]
            pipr.addr("add", index=eth, address=addr, prefixlen=16)
            pipr.link("set", index=eth, state="up")
        return addr

    def remove_pod(self, addr: str) -> None:
        remove_netns(self.names.pop(addr))

    def close(self) -> None:
        for addr in list(self.names):
            self.remove_pod(addr)
        remove_netns(self.node)

    def __exit__(self, *exc: object) -> None:
        self.close()
