"""How soon release acts: N loopback connections, each moved to TCP for good
by a burst of small writes while its reader keeps up; the controller's own
figures (event to controller, event to both ends released) and the time this
script saw each connection leave the map, as JSON on stdout.

    python -m benchmarks.release_delay [--connections 50] [--grace 1.0]

Root only: it runs the real controller on a private cgroup (removed after)."""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

import click

from accel.sandbox import Controller, exit_on_terminate, inside, private_cgroup

BURST = 400  # 64 B writes, far past the 64 that reveal a stream
MSG = 64


def _metrics(ctl: Controller) -> str:
    with open(os.path.join(ctl.state_dir, "state.json")) as f:
        port = json.load(f)["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _gauge(text: str, name: str, stat: str) -> float | None:
    m = re.search(rf'^{re.escape(name)}{{stat="{stat}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def _in_map(ctl: Controller, sock: socket.socket) -> bool:
    local, remote = sock.getsockname()[:2], sock.getpeername()[:2]
    return any((e[1], e[2], e[3], e[4]) == (local[0], local[1], remote[0], remote[1]) for e in ctl.sockets())


def _one(ctl: Controller) -> float:
    """One connection: seconds from its last small write to both ends gone."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    client = socket.create_connection(lst.getsockname(), timeout=30)
    server, _ = lst.accept()
    lst.close()
    try:
        total = BURST * MSG
        got = [0]

        def read() -> None:
            while got[0] < total:
                data = server.recv(1 << 16)
                if not data:
                    return
                got[0] += len(data)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        for _ in range(BURST):
            client.sendall(b"x" * MSG)
        sent = time.monotonic()
        reader.join(30)
        while _in_map(ctl, client) or _in_map(ctl, server):
            if time.monotonic() - sent > 30:
                raise RuntimeError("a connection was not released within 30 s")
            time.sleep(0.005)
        return time.monotonic() - sent
    finally:
        client.close()
        server.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--connections", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--grace", default=1.0, show_default=True, type=click.FloatRange(0.0, 60.0), help="The controller's --release-grace.")
def main(connections: int, grace: float) -> None:
    exit_on_terminate()  # SIGTERM/SIGHUP unwind: namespaces, cgroups and the controller are removed
    if os.geteuid() != 0:
        click.echo("release_delay: needs root (it runs the accelerator on a private cgroup)", err=True)
        sys.exit(77)
    seen: list[float] = []
    with tempfile.TemporaryDirectory(prefix="accel-release-delay-") as tmp, private_cgroup("rel") as cg:
        ctl = Controller(cg, os.path.join(tmp, "state"))
        try:
            ctl.start("--release-grace", str(grace))
            with inside(cg):
                for i in range(connections):
                    seen.append(_one(ctl))
                    click.echo(f"connection {i + 1}/{connections}: released after {seen[-1]:.3f} s", err=True)
            text = _metrics(ctl)
        finally:
            ctl.close()
    out = {
        "connections": connections,
        "grace_s": grace,
        "notify_delay_s": {s: _gauge(text, "accel_release_notify_delay_seconds", s) for s in ("p50", "max")},
        "release_latency_s": {s: _gauge(text, "accel_release_latency_seconds", s) for s in ("p50", "max")},
        "seen_gone_after_last_write_s": {"p50": round(statistics.median(seen), 4), "max": round(max(seen), 4)},
    }
    click.echo(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
