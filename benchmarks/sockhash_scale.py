"""A sockhash holding 100,000 connections (200,000 sockets): how fast they
join it, what the map costs in kernel memory, and what `accel status`,
`accel conns` and a metrics scrape cost at that size, with the controller's
idle CPU. Loopback connections of this process, inside a private cgroup.

    python -m benchmarks.sockhash_scale [--connections 100000] [--out DIR]

Root only. Timings are measured, never asserted; JSON on stdout."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sys
import tempfile
import time
import urllib.request
from multiprocessing.connection import Connection
from typing import Any

import click

from accel import libbpf
from accel.sandbox import Controller, exit_on_terminate, inside, private_cgroup

from .scale import cpu_seconds, rss_mib

PORTS = 2  # listeners per process: the ephemeral range (about 28,000 ports) is per destination
BATCH = 1000
PER_PROCESS = 9000  # connections (18,000 descriptors) per worker: the hard descriptor limit here is 20,000


def _memlock(pin: str) -> int:
    """Kernel memory charged to a pinned map (its fdinfo)."""
    fd = libbpf.obj_get(pin)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("memlock:"):
                    return int(line.split()[1])
    finally:
        os.close(fd)
    return 0


def _timed(fn: Any) -> float:
    t = time.monotonic()
    fn()
    return round(time.monotonic() - t, 3)


def _open(n: int) -> tuple[list[socket.socket], float]:
    """``n`` loopback connections; returns every socket and the seconds taken."""
    listeners = []
    for _ in range(PORTS):
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(BATCH * 2)
        listeners.append(lst)
    socks: list[socket.socket] = []
    t0 = time.monotonic()
    for start in range(0, n, BATCH):
        batch = min(BATCH, n - start)
        for i in range(batch):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(listeners[(start + i) % PORTS].getsockname())
            socks.append(c)
        for i in range(batch):
            srv, _ = listeners[(start + i) % PORTS].accept()
            socks.append(srv)
    took = time.monotonic() - t0
    for lst in listeners:
        lst.close()
    return socks, took


def _worker(n: int, pipe: Connection) -> None:
    """One process's share (a process may hold 20,000 descriptors here): open,
    report, hold until told, close, report."""
    socks, took = _open(n)
    pipe.send(took)
    pipe.recv()
    t = time.monotonic()
    for s in socks:
        s.close()
    pipe.send(time.monotonic() - t)


class Workers:
    """Processes that together hold ``connections`` connections."""

    def __init__(self, connections: int) -> None:
        ctx = multiprocessing.get_context("fork")  # children start in this process's cgroup
        shares = [PER_PROCESS] * (connections // PER_PROCESS) + ([connections % PER_PROCESS] if connections % PER_PROCESS else [])
        self.procs, self.pipes = [], []
        for share in shares:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(share, child), daemon=True)
            self.procs.append(proc)
            self.pipes.append(parent)

    def open(self) -> float:
        """Start them all together; seconds until every connection is open."""
        t0 = time.monotonic()
        for proc in self.procs:
            proc.start()
        for pipe in self.pipes:
            pipe.recv()
        return time.monotonic() - t0

    def close(self) -> float:
        t0 = time.monotonic()
        for pipe in self.pipes:
            pipe.send("close")
        for pipe in self.pipes:
            pipe.recv()
        return time.monotonic() - t0

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(10)


def _scrape(ctl: Controller) -> None:
    with open(os.path.join(ctl.state_dir, "state.json")) as f:
        port = json.load(f)["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as r:
        r.read()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--connections", default=100_000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--idle", "idle_s", default=20.0, show_default=True, type=float, help="Seconds of idle CPU measurement with the map full.")
def main(connections: int, idle_s: float) -> None:
    exit_on_terminate()  # SIGTERM/SIGHUP unwind: namespaces, cgroups and the controller are removed
    if os.geteuid() != 0:
        click.echo("sockhash_scale: needs root (it runs the accelerator on a private cgroup)", err=True)
        sys.exit(77)
    size = 1 << (2 * connections + 1024).bit_length()  # room for both ends, a power of two
    row: dict[str, Any] = {"connections": connections, "sockets": 2 * connections, "sockhash_size": size}
    workers = Workers(connections)

    def progress(msg: str) -> None:
        click.echo(msg, err=True)

    with tempfile.TemporaryDirectory(prefix="accel-sockhash-") as tmp, private_cgroup("shs") as cg:
        ctl = Controller(cg, os.path.join(tmp, "state"), rescan_interval=1.0)
        try:
            ctl.start("--sockhash-size", str(size))
            assert ctl.proc is not None
            progress(f"opening {connections} connections in {len(workers.procs)} processes")
            with inside(cg):
                took = workers.open()
            row["open_s"] = round(took, 2)
            row["connections_per_s"] = round(connections / took)
            counters = ctl.counters()
            row["inserted"] = counters["inserted"]
            row["insert_failed"] = counters["insert_failed"]
            row["in_map"] = ctl.status()["sockets"]
            row["sock_hash_memlock_mib"] = round(_memlock(os.path.join(ctl.pin_dir, "sock_hash")) / 2**20, 1)
            row["sock_ptrs_memlock_mib"] = round(_memlock(os.path.join(ctl.pin_dir, "sock_ptrs")) / 2**20, 1)
            progress(f"idle for {idle_s:.0f} s with {row['in_map']} sockets in the map")
            c0, w0 = cpu_seconds(ctl.proc.pid), time.monotonic()
            time.sleep(idle_s)
            row["idle_cpu_pct"] = round(100 * (cpu_seconds(ctl.proc.pid) - c0) / (time.monotonic() - w0), 2)
            row["rss_mib"] = round(rss_mib(ctl.proc.pid), 1)
            row["status_json_s"] = _timed(lambda: ctl.cli("status", "--json"))
            row["conns_json_s"] = _timed(lambda: ctl.cli("conns", "--json", timeout=600))
            row["metrics_scrape_s"] = _timed(lambda: _scrape(ctl))
            row["close_s"] = round(workers.close(), 2)
        finally:
            workers.kill()
            ctl.close()
    click.echo(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
