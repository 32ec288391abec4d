"""Where the benchmark's processes run: network namespaces of a sandbox
(accel.sandbox, shared with the tests and `accel doctor --live`) and CPU
placement. Everything is torn down on exit."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from accel.sandbox import build_pods, create_netns, remove_netns, scratch

SUBNET = 211  # tests use 212-219; a benchmark and the tests must not run at once


@dataclass(frozen=True)
class Place:
    """A network namespace and, when pinned, one CPU."""

    ns: str
    cpu: int | None

    def argv(self, cmd: list[str]) -> list[str]:
        pin = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
        return ["ip", "netns", "exec", self.ns, *pin, *cmd]


@dataclass
class Topology:
    name: str
    client: Place
    server: Place
    server_addr: str  # where servers listen
    hops: int = 1  # accelerated connections a byte crosses (sidecar: 3)
    proxies: list[tuple[Place, str, str]] = field(default_factory=list)  # (place, listen, forward-to) per proxy
    description: str = ""

    def dial_addr(self) -> str:
        """What a client connects to: the server, or the first proxy."""
        return self.proxies[0][1].rsplit(":", 1)[0] if self.proxies else self.server_addr


def cpus(pinned: bool) -> tuple[int | None, int | None]:
    n = os.cpu_count() or 1
    if not pinned:
        return None, None
    return 0, (1 if n > 1 else 0)


@contextlib.contextmanager
def build(names: list[str], pinned: bool) -> Iterator[dict[str, Topology]]:
    """The topologies asked for, sharing one set of namespaces."""
    c_cpu, s_cpu = cpus(pinned)
    pods = build_pods(2, SUBNET, prefix=scratch("bench", netns=True))
    lo_ns = f"{pods.prefix}-lo"
    try:
        create_netns(lo_ns)
        a, b = pods.pods
        out: dict[str, Topology] = {}
        if "loopback" in names:
            out["loopback"] = Topology(
                "loopback", Place(lo_ns, c_cpu), Place(lo_ns, s_cpu), "127.0.0.1", description="client and server in one network namespace, over 127.0.0.1"
            )
        if "pods" in names:
            out["pods"] = Topology(
                "pods",
                Place(a.ns, c_cpu),
                Place(b.ns, s_cpu),
                b.ipv4,
                description="two network namespaces on a bridge through veth pairs (two pods on one node)",
            )
        if "sidecar" in names:
            # client -> HAProxy in the client's pod -> HAProxy in the server's pod -> server
            out["sidecar"] = Topology(
                "sidecar",
                Place(a.ns, c_cpu),
                Place(b.ns, s_cpu),
                "127.0.0.1",
                hops=3,
                proxies=[(Place(a.ns, c_cpu), "127.0.0.1:{p1}", f"{b.ipv4}:{{p2}}"), (Place(b.ns, s_cpu), f"{b.ipv4}:{{p2}}", "127.0.0.1:{sp}")],
                description="client -> HAProxy (client pod, 127.0.0.1) -> HAProxy (server pod) -> server on 127.0.0.1: a service-mesh data path",
            )
        yield out
    finally:
        remove_netns(lo_ns)
        pods.close()


def wait_listening(place: Place, port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Until something listens on ``port`` in the place's namespace."""
    deadline = time.monotonic() + timeout
    hexport = f":{port:04X} "
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(proc.args)} exited {proc.returncode} before listening")  # type: ignore[arg-type]
        for table in ("tcp", "tcp6"):
            # `ip netns exec` and taskset exec the tool: its pid's view of
            # /proc/net is the namespace's.
            try:
                with open(f"/proc/{proc.pid}/net/{table}") as f:
                    lines = f.read().splitlines()
            except OSError:
                lines = []
            for line in lines[1:]:
                cols = line.split()
                if len(cols) > 3 and (cols[1] + " ").endswith(hexport) and cols[3] == "0A":  # LISTEN
                    return
        time.sleep(0.03)
    raise RuntimeError(f"nothing listening on port {port} in {place.ns} after {timeout}s")
