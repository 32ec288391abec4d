"""`accel doctor --live`: the real datapath, end to end, on this kernel.

Probes say a feature exists; they do not say that bytes arrive whole and in
order, or which of the kernel's known sockmap limits apply here. This loads
and attaches the real programs to a scratch cgroup (holding only this
process), with scratch pins, sends real traffic over loopback, and removes
everything afterwards, also on failure. It never touches the node's own
instance or any other process's connections.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import os
import random
import select
import socket
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

from . import abi, kernel, libbpf
from . import log as logmod
from .control import remove_pins
from .datapath import Datapath
from .doctor import Check
from .errors import AccelError
from .maps import PinnedMaps
from .sandbox import inside, private_cgroup, scratch
from .settings import Settings

PREFIX = "live: "


def _inherited_sockops(cgroup: str) -> list[int]:
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return libbpf.prog_query(fd, abi.ATTACH_CGROUP_SOCK_OPS, effective=True)
    finally:
        os.close(fd)


def _pair(family: int = socket.AF_INET, listen: str = "127.0.0.1", connect: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    with socket.socket(family) as lst:
        lst.bind((listen, 0))
        lst.listen()
        client = socket.create_connection((connect, lst.getsockname()[1]), timeout=10)
        server, _ = lst.accept()
    server.settimeout(10)
    return client, server


def _recv_exact(s: socket.socket, n: int, rng: random.Random) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(min(n - len(out), rng.randint(1, 70_000)))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def transfer_is_exact(client: socket.socket, server: socket.socket, size: int, seed: int = 1) -> bool:
    """Send ``size`` random bytes while the other end reads in sizes unrelated
    to the writes; True when every byte arrived, in order."""
    rng = random.Random(seed)
    data = rng.randbytes(size)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(_recv_exact(server, size, random.Random(seed + 1))))
    reader.start()
    client.sendall(data)
    reader.join(30)
    return bool(got) and got[0] == data


def fionread(client: socket.socket, server: socket.socket) -> tuple[int, int]:
    """(bytes FIONREAD reports, bytes queued) on the receiving socket; drains them."""
    data = b"peekaboo" * 100
    client.sendall(data)
    _wait_readable(server)
    buf = array.array("i", [0])
    fcntl.ioctl(server.fileno(), termios.FIONREAD, buf, True)
    _recv_exact(server, len(data), random.Random(0))
    return buf[0], len(data)


def splice_probe(client: socket.socket, server: socket.socket) -> tuple[int, bool]:
    """Queue 4 KiB, then splice() the receiving socket into a pipe (as Go's
    io.Copy between two TCP connections does). Returns what splice took (-1:
    EAGAIN although bytes are queued) and whether splice plus recv() of the
    rest gave back exactly what was sent."""
    data = random.Random(11).randbytes(4096)
    client.sendall(data)
    _wait_readable(server)
    r, w = os.pipe()
    try:
        try:
            took = os.splice(server.fileno(), w, len(data), flags=os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            took = -1
        spliced = os.read(r, took) if took > 0 else b""
    finally:
        os.close(r)
        os.close(w)
    rest = _recv_exact(server, len(data) - len(spliced), random.Random(0))
    return took, spliced + rest == data


def _wait_readable(s: socket.socket) -> None:
    select.select([s], [], [], 5)
    # Redirected bytes of one sendmsg() arrive at once; a loopback TCP
    # segment train may still be landing: give it a moment.
    time.sleep(0.1)


def _order_at_connect(n: int = 100, records: int = 16) -> tuple[int, int]:
    """Connections that write right after connect(): (in order, total)."""
    ok = 0
    for i in range(n):
        client, server = _pair()
        try:
            stream = b"".join(i.to_bytes(4, "big") + r.to_bytes(4, "big") + bytes(56) for r in range(records))
            for r in range(records):
                client.send(stream[r * 64 : (r + 1) * 64])
            got = _recv_exact(server, len(stream), random.Random(i))
            ok += got == stream
        finally:
            client.close()
            server.close()
    return ok, n


class LiveRun:
    """One self-test: scratch instance, checks in order, cleanup."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        logmod.configure("console", level=logging.ERROR)
        self.log = logmod.get("accel.selftest")

    def add(self, name: str, ok: bool, detail: str, fix: str = "", warning: bool = False) -> None:
        self.checks.append(Check(PREFIX + name, ok, detail, fix, warning))

    def run(self, parent: str | None = None) -> list[Check]:
        try:
            root = kernel.resolve_cgroup(parent) if parent else kernel.cgroup2_root(mount_if_missing=False)
        except AccelError as exc:
            self.add("scratch cgroup", False, str(exc))
            return self.checks
        pin_dir = os.path.join(kernel.DEFAULT_BPFFS, scratch("selftest"))
        state = tempfile.mkdtemp(prefix="accel-selftest-")
        cg = ""
        remaining = 0
        try:
            with private_cgroup("selftest", parent=root) as cg, inside(cg):
                settings = Settings(pin_dir=pin_dir, state_dir=state, cgroup=cg, sockhash_size=1024, endpoints_size=16, metrics_address=None)
                remaining = self._with_datapath(settings)
        except (AccelError, OSError) as exc:
            self.add("scratch instance", False, f"{type(exc).__name__}: {exc}", "see the checks above; report it with this output")
        finally:
            if os.path.exists(pin_dir):  # a failure midway: our own scratch sockets only
                with contextlib.suppress(Exception):
                    remove_pins(Settings(pin_dir=pin_dir, state_dir=state, metrics_address=None), force=True)
            with contextlib.suppress(OSError):
                os.rmdir(state)
        left = [p for p in (pin_dir, cg) if p and os.path.exists(p)]
        self.add(
            "clean up",
            not left and remaining == 0,
            "scratch pins, programs and cgroup removed" if not left else f"left behind: {', '.join(left)}",
            "" if not left else "remove them by hand (accel down --pin-dir ... --force; rmdir the cgroup)",
        )
        return self.checks

    def _with_datapath(self, settings: Settings) -> int:
        """Run the traffic checks; returns the sockets left in the scratch map."""
        others = _inherited_sockops(settings.cgroup or "")
        if others:
            # Their programs would take this process's sockets first (a
            # socket runs the sk_msg program of the first map it joins).
            self.add(
                "datapath",
                True,
                f"not run: sockops programs {others} already act on every new cgroup here (the node's accel?)",
                "their connections are served by them; to test this kernel, run `accel doctor --live` where no accel instance runs",
                warning=True,
            )
            return 0
        dp = Datapath(settings, self.log)
        held: list[socket.socket] = []
        try:
            att = dp.start()
            assert att is not None
            ids = ", ".join(f"{name} {prog_id}" for name, prog_id in att.ids.items())
            self.add("load and attach", True, f"{ids} on a scratch cgroup")
            self._traffic(settings, dp, held)
        finally:
            dp.stop()
            for s in held:
                s.close()
        return remove_pins(settings, force=False) if os.path.isdir(settings.pin_dir) else 0

    def _counters(self, settings: Settings) -> dict[str, int]:
        with PinnedMaps(settings.pin_dir) as maps:
            return maps.stats()

    def _measure(self, settings: Settings, fn: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
        before = self._counters(settings)
        out = fn()
        after = self._counters(settings)
        return out, {k: after[k] - before[k] for k in after}

    def _traffic(self, settings: Settings, dp: Datapath, held: list[socket.socket]) -> None:
        client, server = _pair()
        held += [client, server]
        size = 4 << 20
        exact, d = self._measure(settings, lambda: transfer_is_exact(client, server, size) and transfer_is_exact(server, client, size, seed=3))
        redirected = d["redirected_bytes"] >= 2 * size
        self.add(
            "redirect, loopback, 4 MiB each way",
            exact and redirected,
            f"bytes exact: {exact}; redirected {d['redirected_bytes']:,} of {2 * size:,} bytes",
            "" if redirected else "sockets were not inserted: check `accel doctor` above and the kernel log",
        )
        if socket.has_ipv6:
            try:
                c6, s6 = _pair(socket.AF_INET6, "::", "127.0.0.1")
            except OSError as exc:
                self.add("dual stack", True, f"skipped: no IPv6 listener here ({exc.strerror})", warning=True)
            else:
                held += [c6, s6]
                exact, d = self._measure(settings, lambda: transfer_is_exact(c6, s6, 1 << 20))
                self.add("dual stack (IPv4 client, server on ::)", exact and d["redirected_bytes"] >= 1 << 20, f"redirected {d['redirected_bytes']:,} bytes")

        (ok, n), d = self._measure(settings, _order_at_connect)
        self.add(
            "order at connection start",
            ok == n,
            f"{ok}/{n} connections writing right after connect() arrived in order "
            f"({d['fallback_peer_missing']} started on TCP and stayed there, {d['inserted']} sockets inserted)",
        )

        reported, queued = fionread(client, server)
        self.add(
            "FIONREAD",
            True,
            f"{reported} of {queued} queued bytes",
            "" if reported == queued else "this kernel predates the sockmap FIONREAD fix: programs that size reads with FIONREAD see too little",
            warning=reported != queued,
        )
        took, intact = splice_probe(client, server)
        self.add(
            "splice()",
            intact,
            f"splice took {took} of 4096 queued bytes; recv() returned the rest" if took != 4096 else "splice sees redirected bytes",
            ""
            if took == 4096
            else "readers that splice() stall: keep Go programs copying between TCP connections, pasta and HAProxy splice options out (cgroup or opt-out)",
            warning=took != 4096,
        )

        dp.stop()  # what `accel run` does on SIGTERM: new connections stay on TCP
        exact, d = self._measure(settings, lambda: transfer_is_exact(client, server, 1 << 20, seed=5))
        c2, s2 = _pair()
        held += [c2, s2]
        with PinnedMaps(settings.pin_dir) as maps:
            in_map = maps.socket_count()
        self.add(
            "stop keeps live connections",
            exact and d["redirected_bytes"] >= 1 << 20 and d["inserted"] == 0,
            f"after detach: live connection exact {exact}, redirected {d['redirected_bytes']:,} bytes; new connections inserted: {d['inserted']}; "
            f"{in_map} sockets in the map",
        )


def run_live(parent: str | None = None) -> list[Check]:
    """The live checks, in a scratch cgroup under ``parent`` (default: the
    cgroup-v2 root)."""
    return LiveRun().run(parent)
