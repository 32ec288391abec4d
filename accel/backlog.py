"""The backlog guard: keep a slow reader from hoarding node memory.

Redirected bytes are queued on the receiving socket and charged to the
node's TCP memory, but not limited by the receive buffer as TCP's window
would limit them (measured: a paused receiver took 512 MiB in 3 s where plain
TCP stopped the sender at 0.8 MiB; through a two-HAProxy sidecar chain the
node's TCP memory ran out and iperf3 got ENOMEM). The kernel offers the
datapath no view of the receiver's queue, so the controller watches it:

- cheaply, most of the time: no socket can hold more than the node's whole
  TCP memory (/proc/net/sockstat), so while that is below the limit there is
  nothing to look at;
- otherwise it lists the established sockets of every network namespace
  with sock_diag (netns.py), and every accelerated receiver whose queue
  (rmem_alloc) exceeds the limit goes into the pinned ``backlog_guard`` map.
  The peer's sk_msg program then sends through TCP from its next message on,
  for good (order-safe), and TCP flow control bounds the rest.

The limit defaults to what TCP itself would let a receiver buffer: the
largest receive buffer (net.ipv4.tcp_rmem max), at least 4 MiB.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from .abi import SockEntry
from .kernel import tcp_memory_bytes
from .maps import PinnedMaps
from .netns import entered, full_receivers, namespace_paths, netns_cookie

MIN_LIMIT = 4 << 20
PAGE = 4096


def default_limit() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_rmem") as f:
            rmem_max = int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        rmem_max = 0
    return max(MIN_LIMIT, rmem_max)


def scan_namespaces(limit: int) -> dict[tuple[int, str, int, str, int], int]:
    """Receivers over ``limit`` in every namespace, keyed with the cookie."""
    found: dict[tuple[int, str, int, str, int], int] = {}
    for path in namespace_paths().values():
        with contextlib.suppress(OSError), entered(path):
            with socket.socket() as s:
                cookie = netns_cookie(s)
            for local, lport, remote, rport, queued in full_receivers(limit):
                found[(cookie, local, lport, remote, rport)] = queued
    return found


class BacklogGuard:
    def __init__(self, pin_dir: str, limit: int, log: Any) -> None:
        self.pin_dir = pin_dir
        self.limit = limit
        self.log = log
        self.listed = 0  # receivers listed now
        self._last_scan = (0.0, 0)  # (when, node TCP memory then)

    def check(self) -> int:
        """One round; returns how many receivers are listed now."""
        mem = tcp_memory_bytes()
        if mem <= self.limit:
            if self.listed:
                self.listed = self._forget_closed()
            return self.listed
        # A busy node may hold more TCP memory than the limit in many normal
        # sockets: scan again only once memory grew by half a limit, or after
        # a second, not on every round.
        when, then = self._last_scan
        now = time.monotonic()
        if mem - then < self.limit // 2 and now - when < 1.0:
            return self.listed
        self._last_scan = (now, mem)
        found = scan_namespaces(self.limit)
        if not found:
            self.listed = self._forget_closed() if self.listed else 0
            return self.listed
        by_tuple: dict[tuple[str, int, str, int], list[tuple[int, int]]] = {}
        for (cookie, local, lport, remote, rport), queued in found.items():
            by_tuple.setdefault((local, lport, remote, rport), []).append((cookie, queued))
        with PinnedMaps(self.pin_dir) as maps:
            listed = {bytes(k) for k in maps.guarded()}
            for key in maps.socket_keys():
                e = SockEntry.from_key(key)
                # Loopback-like keys carry their namespace's cookie; others are
                # unique on the node (ambiguous addresses are never inserted).
                hit = next((q for c, q in by_tuple.get((e.local, e.local_port, e.remote, e.remote_port), []) if e.netns in (0, c)), None)
                if hit is not None and bytes(key) not in listed:
                    maps.guard(key)
                    listed.add(bytes(key))
                    self.log.warning(
                        "receiver holds more than TCP would; its peer moves to TCP",
                        receiver=f"{e.local}:{e.local_port}",
                        sender=f"{e.remote}:{e.remote_port}",
                        queued_mib=round(hit / 2**20, 1),
                        limit_mib=round(self.limit / 2**20, 1),
                    )
            maps.set_guard_active(len(listed))
        self.listed = self._forget_closed()
        return self.listed

    def start(self, interval: float) -> None:
        """Check every ``interval`` seconds in a thread of its own, so that a
        scan of many namespaces never delays the endpoint loop (and setns for
        sock_diag changes only this thread's namespace)."""
        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check()
                except Exception as exc:  # keep guarding; say why this round failed
                    self.log.warning("backlog check failed; retrying", error=f"{type(exc).__name__}: {exc}"[:300])
                    self._stop.wait(1.0)

        self._thread = threading.Thread(target=loop, name="backlog-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if getattr(self, "_thread", None) is not None:
            self._stop.set()
            self._thread.join(5)

    def _forget_closed(self) -> int:
        """Drop listed keys whose socket left the sockhash (closed)."""
        with PinnedMaps(self.pin_dir) as maps:
            listed = maps.guarded()
            if not listed:
                return 0
            live = {bytes(k) for k in maps.socket_keys()}
            keep = 0
            for key in listed:
                if bytes(key) in live:
                    keep += 1
                else:
                    maps.unguard(key)
            maps.set_guard_active(keep)
            return keep


__all__ = ["BacklogGuard", "default_limit"]
