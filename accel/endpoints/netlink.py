"""Addresses of every network namespace on this node, kept current through
rtnetlink (pyroute2): one netlink socket per namespace, subscribed to address
events; namespaces are found in /run/netns (ip netns, CNI) and /proc/*/ns/net
(containers that do not name theirs) and rescanned periodically.

On any event in a namespace we re-dump that namespace's addresses rather than
apply the event: a dump is cheap and can't drift if an event was lost.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR

from ..netns import NamespaceId, namespace_paths


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
