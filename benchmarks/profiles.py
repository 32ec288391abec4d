"""The benchmark profiles: which workloads, how long, how many repeats."""

from __future__ import annotations

from dataclasses import dataclass

from .workloads import Settings, Workload, human_size

TCP = ("plain", "accel")
ALL = ("plain", "accel", "unix")
STREAM_SIZES = (64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 128 << 10, 1 << 20)
LATENCY_SIZES = (64, 1 << 10, 4 << 10, 65000)  # sockperf's largest TCP message is under 64 KiB


@dataclass
class Profile:
    name: str
    repeats: int
    settings: Settings
    workloads: list[Workload]
    topologies: tuple[str, ...]


def _stream(topo: str, size: int, streams: int, modes: tuple[str, ...]) -> Workload:
    return Workload(topo, "iperf3", f"stream {human_size(size)} x{streams}", "gbit_per_s", "Gbit/s", True, modes, {"size": size, "streams": streams})


def _latency(topo: str, size: int, modes: tuple[str, ...], metric: str = "p50_us") -> Workload:
    return Workload(topo, "latency", f"ping-pong {human_size(size)}", metric, "us", False, modes, {"size": size})


def _connrate(topo: str, modes: tuple[str, ...]) -> Workload:
    return Workload(topo, "connrate", "connect+64 B req/resp+close", "per_s", "conn/s", True, modes, {})


def _redis(topo: str, pipeline: int, modes: tuple[str, ...]) -> Workload:
    return Workload(topo, "redis", f"redis GET/SET -P {pipeline}", "ops_per_s", "ops/s", True, modes, {"pipeline": pipeline})


def _nginx(topo: str, size: int) -> Workload:
    return Workload(topo, "nginx", f"nginx+wrk {human_size(size)}", "requests_per_s", "req/s", True, TCP, {"size": size})


def full() -> Profile:
    w: list[Workload] = []
    for topo in ("loopback", "pods"):
        for streams in (1, 4):
            w += [_stream(topo, size, streams, ALL) for size in STREAM_SIZES]
        w += [_latency(topo, size, ALL) for size in LATENCY_SIZES]
        w.append(_connrate(topo, ALL))
    w += [_stream("sidecar", size, 1, TCP) for size in (256, 4 << 10, 64 << 10, 1 << 20)]
    w += [_latency("sidecar", size, TCP) for size in (64, 4 << 10)]
    w.append(_connrate("sidecar", TCP))
    w += [_redis("pods", p, ALL) for p in (1, 16)]
    w += [_nginx("pods", size) for size in (128, 64 << 10)]
    return Profile("full", 5, Settings(seconds=2.0, redis_requests=100_000), w, ("loopback", "pods", "sidecar"))


def quick() -> Profile:
    """A smoke run under 2 minutes: every kind of workload, few sizes."""
    w: list[Workload] = [_stream("loopback", size, 1, ALL) for size in (64, 16 << 10)]
    w.append(_latency("loopback", 64, ALL))
    w += [_stream("pods", size, 1, ALL) for size in (64, 16 << 10, 1 << 20)]
    w.append(_latency("pods", 64, ALL))
    w.append(_connrate("pods", ALL))
    w.append(_stream("sidecar", 16 << 10, 1, TCP))
    w.append(_redis("pods", 1, ALL))
    w.append(_nginx("pods", 128))
    return Profile("quick", 2, Settings(seconds=1.0, redis_requests=5_000), w, ("loopback", "pods", "sidecar"))


def long() -> Profile:
    """The bulk cells at 10 s, 7 repeats: a stream whose receiver falls behind
    after a few seconds shows it here, and a 2 s cell would hide it."""
    w: list[Workload] = []
    for topo in ("loopback", "pods"):
        for streams in (1, 4):
            w += [_stream(topo, size, streams, TCP) for size in (128 << 10, 1 << 20)]
    return Profile("long", 7, Settings(seconds=10.0, redis_requests=0), w, ("loopback", "pods"))


def tiny() -> Profile:
    """For the harness's own test: one of each path, once."""
    w = [_stream("pods", 16 << 10, 1, ALL), _latency("pods", 64, TCP), _stream("sidecar", 64 << 10, 1, TCP)]
    return Profile("tiny", 1, Settings(seconds=1.0, redis_requests=1000), w, ("pods", "sidecar"))


# The write sizes at which benchmarks.crossover looks for where redirect starts
# to win (the small-write limits): the stream sizes below the bulk ones, which
# win on every path measured so far.
CROSSOVER_SIZES = (64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10)
CROSSOVER_TOPOLOGIES = ("loopback", "pods")


def crossover(sizes: tuple[int, ...] = CROSSOVER_SIZES) -> Profile:
    """One and four streams at each size, on loopback and between pods, plain
    TCP against accelerated: benchmarks.crossover runs it with the small-write
    rule off, so that redirect itself is measured."""
    w = [_stream(topo, size, streams, TCP) for topo in CROSSOVER_TOPOLOGIES for size in sizes for streams in (1, 4)]
    return Profile("crossover", 5, Settings(seconds=2.0, redis_requests=0), w, CROSSOVER_TOPOLOGIES)


PROFILES = {"full": full, "quick": quick, "long": long, "tiny": tiny}
