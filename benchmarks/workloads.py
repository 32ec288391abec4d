"""What is measured and how: each Workload runs one measurement of one mode
(plain TCP, accelerated, or AF_UNIX) with real tools, and returns the tool's
numbers. Servers are started fresh for every measurement, from inside the
mode's cgroup, so each measurement's sockets belong to that mode alone."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import parse
from .topology import Place, Topology, wait_listening

LOADGEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loadgen")
_ports = itertools.count(21000)


def next_port() -> int:
    return next(_ports)


class MeasureError(RuntimeError):
    """One measurement failed; the report shows it instead of a number."""


@dataclass
class Settings:
    seconds: float
    redis_requests: int

    @property
    def whole_seconds(self) -> str:
        """iperf3 and sockperf take whole seconds (0 would mean forever)."""
        return str(max(1, round(self.seconds)))


@dataclass
class Workload:
    topology: str
    name: str  # iperf3, latency, connrate, redis, nginx
    label: str  # the table row, e.g. "stream 16 KiB x1"
    metric: str  # the headline number in the table
    unit: str
    higher_is_better: bool
    modes: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.topology}/{self.name}/{self.label}"


@contextlib.contextmanager
def _running(place: Place, argv: list[str], port: int | None, log: list[str]) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(place.argv(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        if port is not None:
            wait_listening(place, port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            log.append(proc.stdout.read()[-2000:])


def _client(place: Place, argv: list[str], timeout: float) -> str:
    try:
        res = subprocess.run(place.argv(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise MeasureError(f"{argv[0]} did not finish within {timeout:.0f}s") from exc
    if res.returncode != 0:
        raise MeasureError(f"{' '.join(argv)} exited {res.returncode}: {(res.stderr or res.stdout)[-400:]}")
    return res.stdout


HAPROXY_CFG = """global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend in
    bind {listen}
    default_backend out
backend out
    server s {forward}
"""


@contextlib.contextmanager
def _proxies(topo: Topology, server_port: int, log: list[str]) -> Iterator[int]:
    """Start the topology's proxies (if any); yield the port a client dials."""
    if not topo.proxies:
        yield server_port
        return
    ports = {"p1": next_port(), "p2": next_port(), "sp": server_port}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="accel-bench-"))
        for i, (place, listen, forward) in enumerate(reversed(topo.proxies)):
            cfg = os.path.join(tmp, f"p{i}.cfg")
            with open(cfg, "w") as f:
                f.write(HAPROXY_CFG.format(listen=listen.format(**ports), forward=forward.format(**ports)))
            stack.enter_context(_running(place, ["haproxy", "-db", "-f", cfg], int(listen.format(**ports).rsplit(":", 1)[1]), log))
        yield ports["p1"]


def _unix_path() -> str:
    return os.path.join(tempfile.gettempdir(), f"accel-bench-{os.getpid()}-{next_port()}.sock")


# --- the measurements ----------------------------------------------------------------------------
def iperf3(w: Workload, topo: Topology, mode: str, s: Settings, log: list[str]) -> dict[str, float]:
    size, streams = w.params["size"], w.params["streams"]
    if mode == "unix":
        return _loadgen_unix(topo, "stream", size, streams, s, log)
    port = next_port()
    with _running(topo.server, ["iperf3", "-s", "-1", "-B", topo.server_addr, "-p", str(port)], port, log), _proxies(topo, port, log) as dial:
        argv = ["iperf3", "-c", topo.dial_addr(), "-p", str(dial), "-l", str(size), "-P", str(streams), "-t", s.whole_seconds, "-J"]
        out = _client(topo.client, argv, s.seconds + 30)
    m = parse.iperf3(out)
    m["tool_bytes"] = m["bytes"]
    return m


def latency(w: Workload, topo: Topology, mode: str, s: Settings, log: list[str]) -> dict[str, float]:
    size = w.params["size"]
    if mode == "unix":
        return _loadgen_unix(topo, "pingpong", size, 1, s, log)
    port = next_port()
    with _running(topo.server, ["sockperf", "server", "--tcp", "-i", topo.server_addr, "-p", str(port)], port, log), _proxies(topo, port, log) as dial:
        argv = ["sockperf", "ping-pong", "--tcp", "-i", topo.dial_addr(), "-p", str(dial), "-m", str(size), "-t", s.whole_seconds, "--full-rtt"]
        out = _client(topo.client, argv, s.seconds + 30)
    return parse.sockperf(out)


def connrate(w: Workload, topo: Topology, mode: str, s: Settings, log: list[str]) -> dict[str, float]:
    if mode == "unix":
        return _loadgen_unix(topo, "connrate", 64, 1, s, log)
    port = next_port()
    addr = f"tcp:{topo.server_addr}:{port}"
    with _running(topo.server, [LOADGEN, "server", addr], port, log), _proxies(topo, port, log) as dial:
        out = _client(topo.client, [LOADGEN, "client", f"tcp:{topo.dial_addr()}:{dial}", "connrate", "64", "1", str(s.seconds)], s.seconds + 30)
    return parse.loadgen(out)


def _loadgen_unix(topo: Topology, what: str, size: int, streams: int, s: Settings, log: list[str]) -> dict[str, float]:
    path = _unix_path()
    try:
        with _running(topo.server, [LOADGEN, "server", f"unix:{path}"], None, log) as proc:
            line = proc.stdout.readline() if proc.stdout else ""
            if "ready" not in line:
                raise MeasureError(f"loadgen server: {line!r}")
            out = _client(topo.client, [LOADGEN, "client", f"unix:{path}", what, str(size), str(streams), str(s.seconds)], s.seconds + 30)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    m = parse.loadgen(out)
    if "bytes" in m:
        m["tool_bytes"] = m["bytes"]
    return m


def redis(w: Workload, topo: Topology, mode: str, s: Settings, log: list[str]) -> dict[str, float]:
    pipeline = w.params["pipeline"]
    port = next_port()
    path = _unix_path()
    server = ["redis-server", "--port", str(port), "--bind", topo.server_addr, "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    server += ["--unixsocket", path, "--unixsocketperm", "777"]
    target = ["-s", path] if mode == "unix" else ["-h", topo.dial_addr(), "-p", "{dial}"]
    try:
        with _running(topo.server, server, port, log), _proxies(topo, port, log) as dial:
            argv = ["redis-benchmark", *[a.format(dial=dial) for a in target], "-t", "set,get", "-n", str(s.redis_requests), "-c", "10"]
            out = _client(topo.client, [*argv, "-P", str(pipeline), "--csv", "-q"], 300)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    m = parse.redis_benchmark(out)
    m["ops_per_s"] = (m.get("set_rps", 0) + m.get("get_rps", 0)) / 2
    return m


NGINX_CFG = """daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {addr}:{port};
        root {dir}/www;
    }}
}}
"""


def nginx(w: Workload, topo: Topology, mode: str, s: Settings, log: list[str]) -> dict[str, float]:
    size = w.params["size"]
    port = next_port()
    with tempfile.TemporaryDirectory(prefix="accel-bench-nginx-") as d:
        os.mkdir(os.path.join(d, "www"))
        with open(os.path.join(d, "www", "obj"), "wb") as f:
            f.write(os.urandom(size))
        cfg = os.path.join(d, "nginx.conf")
        with open(cfg, "w") as f:
            f.write(NGINX_CFG.format(dir=d, addr=topo.server_addr, port=port))
        with _running(topo.server, ["nginx", "-c", cfg, "-p", d], port, log), _proxies(topo, port, log) as dial:
            url = f"http://{topo.dial_addr()}:{dial}/obj"
            out = _client(topo.client, ["wrk", "-t1", "-c8", f"-d{s.whole_seconds}s", "--latency", url], s.seconds + 30)
    return parse.wrk(out)


RUNNERS: dict[str, Callable[[Workload, Topology, str, Settings, list[str]], dict[str, float]]] = {
    "iperf3": iperf3,
    "latency": latency,
    "connrate": connrate,
    "redis": redis,
    "nginx": nginx,
}


def human_size(n: int) -> str:
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"
