"""Addresses of every network namespace on this node, kept current through
rtnetlink (pyroute2): one netlink socket per namespace, subscribed to address
events; namespaces are found in /run/netns (ip netns, CNI) and /proc/*/ns/net
(containers that do not name theirs) and rescanned periodically.

On any event in a namespace we re-dump that namespace's addresses rather than
apply the event: a dump is cheap and can't drift if an event was lost.

It also holds the other netlink reads the controller makes through pyroute2:
netns cookies, and sock_diag receive queues for the backlog guard.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR

from .table import NamespaceId

NETNS_RUN_DIRS = ("/run/netns", "/var/run/netns")


def namespace_paths(all_namespaces: bool = True) -> dict[NamespaceId, str]:
    """Every distinct network namespace we can open, by (dev, inode); only
    the host's when ``all_namespaces`` is False (Kubernetes mode, where pod
    IPs come from the API)."""
    found: dict[NamespaceId, str] = {}

    def add(path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        found.setdefault((st.st_dev, st.st_ino), path)

    add("/proc/1/ns/net")
    add("/proc/self/ns/net")
    if not all_namespaces:
        return found
    for run_dir in NETNS_RUN_DIRS:
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(run_dir)):
                add(os.path.join(run_dir, name))
    with contextlib.suppress(OSError):
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                add(f"/proc/{pid}/ns/net")
    return found


SO_NETNS_COOKIE = 71  # getsockopt, Linux >= 5.14
INET_DIAG_SKMEMINFO = 7
TCP_ESTABLISHED = 1


def netns_cookie(sock: socket.socket) -> int:
    """The cookie of the network namespace ``sock`` lives in (the value the
    BPF programs put in loopback keys)."""
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")


def _unmapped(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


def full_receivers(limit: int) -> list[tuple[str, int, str, int, int]]:
    """(local, lport, remote, rport, queued bytes) of established TCP sockets
    of the calling thread's namespace whose receive memory exceeds ``limit``
    (sock_diag; the backlog guard's view of receive queues)."""
    from pyroute2 import DiagSocket

    out = []
    with DiagSocket() as ds:
        ds.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in ds.get_sock_stats(family=family, states=1 << TCP_ESTABLISHED, extensions=1 << (INET_DIAG_SKMEMINFO - 1)):
                raw = msg.get_attr("INET_DIAG_SKMEMINFO")
                if not raw:
                    continue
                rmem = struct.unpack_from("<I", bytes.fromhex(raw.replace(":", "")) if isinstance(raw, str) else raw)[0]
                if rmem > limit:
                    out.append((_unmapped(msg["idiag_src"]), msg["idiag_sport"], _unmapped(msg["idiag_dst"]), msg["idiag_dport"], rmem))
    return out


def namespace_cookie_paths() -> dict[int, str]:
    """netns cookie -> a path that opens the namespace, for every namespace."""
    from pyroute2 import netns as pr_netns

    out: dict[int, str] = {}
    for _ns, path in namespace_paths().items():
        try:
            sock = socket.socket() if path in ("/proc/self/ns/net", "/proc/1/ns/net") else pr_netns.create_socket(netns=path)
            with sock:
                cookie = netns_cookie(sock)
        except OSError:
            continue
        out.setdefault(cookie, path)
    return out


def namespace_cookies() -> dict[int, str]:
    """netns cookie -> a readable name (the ip-netns name, or the path), so
    that `accel conns` can say which namespace a loopback connection is in."""
    names: dict[int, str] = {}
    for cookie, path in namespace_cookie_paths().items():
        label = "host" if path in ("/proc/self/ns/net", "/proc/1/ns/net") else path
        if path.startswith(NETNS_RUN_DIRS):
            label = os.path.basename(path)
        names[cookie] = label
    return names


class _Watched:
    def __init__(self, ns: NamespaceId, path: str) -> None:
        self.ns = ns
        self.path = path
        self.born = time.monotonic()
        self.ipr = IPRoute(netns=path) if path != "/proc/self/ns/net" else IPRoute()
        self.ipr.bind(groups=RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
        self.addrs: set[str] = set()

    def dump(self) -> set[str]:
        self.addrs = {str(a.get_attr("IFA_ADDRESS")) for a in self.ipr.addr("dump") if a.get_attr("IFA_ADDRESS")}
        return self.addrs

    def drain(self) -> None:
        while select.select([self.ipr], [], [], 0)[0]:
            self.ipr.get()

    def fileno(self) -> int:
        return int(self.ipr.fileno())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ipr.close()


class NetlinkEndpoints:
    """Current addresses per namespace; ``poll()`` reports when they changed."""

    def __init__(self, log: Any, all_namespaces: bool = True) -> None:
        self.log = log
        self.all_namespaces = all_namespaces
        self._watched: dict[NamespaceId, _Watched] = {}
        self._rescans = 0

    def addresses(self) -> dict[NamespaceId, set[str]]:
        return {ns: set(w.addrs) for ns, w in self._watched.items()}

    def namespaces(self) -> Iterator[tuple[NamespaceId, str]]:
        for ns, w in self._watched.items():
            yield ns, w.path

    def rescan(self) -> bool:
        """Pick up new namespaces and drop gone ones. True if anything changed."""
        current = namespace_paths(self.all_namespaces)
        changed = False
        for ns in list(self._watched):
            if ns not in current:
                self._watched.pop(ns).close()
                self.log.info("namespace gone", netns=f"{ns[0]}:{ns[1]}")
                changed = True
        # An address event that lands while a dump is running is consumed by
        # the dump's reader and never seen as an event (CI caught a namespace
        # whose second address came during its first dump). So dump again:
        # namespaces watched for under 5 s (being set up) on every rescan, all
        # of them every 10th rescan as a safety net.
        self._rescans += 1
        now = time.monotonic()
        for ns, w in list(self._watched.items()):
            if ns in current and (now - w.born < 5.0 or self._rescans % 10 == 0):
                try:
                    before = set(w.addrs)
                    changed = (w.dump() != before) or changed
                except Exception as exc:
                    self.log.debug("namespace dump failed", path=w.path, error=str(exc))
        for ns, path in current.items():
            if ns in self._watched:
                continue
            try:
                w = _Watched(ns, path)
                w.dump()
            except Exception as exc:  # a namespace can vanish while we open it
                self.log.debug("namespace not watched", path=path, error=str(exc))
                continue
            self._watched[ns] = w
            self.log.info("namespace watched", path=path, addresses=len(w.addrs))
            changed = True
        return changed

    def poll(self, timeout: float, extra_fds: list[int] | None = None) -> tuple[bool, list[int]]:
        """Wait up to ``timeout`` for address events. Returns (changed, ready
        extra fds)."""
        watched = list(self._watched.values())
        fds: list[Any] = [*watched, *(extra_fds or [])]
        try:
            ready = select.select(fds, [], [], timeout)[0]
        except (OSError, ValueError):
            ready = []
        changed = False
        for item in ready:
            if isinstance(item, _Watched):
                try:
                    item.drain()
                    before = set(item.addrs)
                    if item.dump() != before:
                        changed = True
                except Exception as exc:
                    self.log.debug("namespace dump failed", path=item.path, error=str(exc))
                    self._watched.pop(item.ns, None)
                    item.close()
                    changed = True
        return changed, [f for f in ready if isinstance(f, int)]

    def close(self) -> None:
        for w in self._watched.values():
            w.close()
        self._watched.clear()
