"""Runs a profile: the real controller on a private cgroup, a second private
cgroup without programs for plain TCP and AF_UNIX, every measurement in the
same run, modes interleaved, and each accelerated measurement cross-checked
against the controller's own counters."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from accel import libbpf
from accel.sandbox import Controller, inside, private_cgroup

from . import parse
from .profiles import Profile
from .topology import Topology, build
from .workloads import LOADGEN, RUNNERS, MeasureError

HERE = os.path.dirname(os.path.abspath(__file__))
COVERAGE_MIN = 0.9  # redirected bytes / (tool bytes x hops) below this: flagged


class HarnessError(RuntimeError):
    """The harness cannot run here; the message says what to do."""


def build_loadgen() -> str:
    src = os.path.join(HERE, "loadgen.c")
    if os.path.exists(LOADGEN) and os.path.getmtime(LOADGEN) >= os.path.getmtime(src):
        return LOADGEN
    res = subprocess.run(["cc", "-O2", "-Wall", "-o", LOADGEN, src], capture_output=True, text=True)
    if res.returncode != 0:
        raise HarnessError(f"build benchmarks/loadgen.c: {res.stderr.strip()[-300:]} - install gcc (sudo scripts/setup --dev)")
    return LOADGEN


REQUIRED_TOOLS = ("iperf3", "sockperf", "haproxy", "redis-server", "redis-benchmark", "nginx", "wrk", "taskset", "ip", "cc")


def check_tools() -> None:
    import shutil

    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise HarnessError(f"missing tools: {', '.join(missing)} - run: sudo scripts/setup --dev")


def _version(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (res.stdout or res.stderr).strip().splitlines()
    return text[0][:120] if text else "?"


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "kernel": platform.release(),
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "accel_commit": commit or "?",
        "tools": {
            "iperf3": _version(["iperf3", "--version"]),
            "sockperf": _version(["sockperf", "--version"]),
            "redis": _version(["redis-server", "--version"]),
            "wrk": _version(["wrk", "--version"]),
            "haproxy": _version(["haproxy", "-v"]),
            "nginx": _version(["nginx", "-v"]),
        },
    }


@dataclass
class Env:
    ctl: Controller
    accel_cgroup: str
    plain_cgroup: str
    topologies: dict[str, Topology]
    programs: dict[str, int] | None = None  # entry -> program id, when their cost is measured


@contextlib.contextmanager
def environment(profile: Profile, pinned: bool, accel_args: tuple[str, ...] = (), program_cost: bool = False) -> Iterator[Env]:
    with private_cgroup("bench-accel") as acg, private_cgroup("bench-plain") as pcg, build(list(profile.topologies), pinned) as topos:
        ctl = Controller(acg, tempfile.mkdtemp(prefix="accel-bench-"), rescan_interval=1.0)
        stats_fd = None
        try:
            ctl.start(*accel_args)
            env = Env(ctl, acg, pcg, topos)
            if program_cost:
                # The kernel times every program run while this fd is open
                # (two clock reads per run, so it is a switch of its own).
                stats_fd = libbpf.enable_run_stats()
                env.programs = dict(ctl.status()["run_state"]["programs"])
            yield env
        finally:
            if stats_fd is not None:
                os.close(stats_fd)
            ctl.close()


def _program_stats(env: Env) -> dict[str, tuple[int, int]]:
    out = {}
    for entry, prog_id in (env.programs or {}).items():
        with contextlib.suppress(OSError):
            out[entry] = libbpf.prog_run_stats(prog_id)
    return out


def measure_once(env: Env, profile: Profile, wl: Any, mode: str, rep: int) -> dict[str, Any]:
    topo = env.topologies[wl.topology]
    log: list[str] = []
    before = env.ctl.counters()
    runs_before = _program_stats(env) if mode == "accel" else {}
    t0 = time.monotonic()
    error = ""
    metrics: dict[str, float] = {}
    with inside(env.accel_cgroup if mode == "accel" else env.plain_cgroup):
        try:
            metrics = RUNNERS[wl.name](wl, topo, mode, profile.settings, log)
        except (MeasureError, parse.ParseError, RuntimeError, OSError) as exc:
            error = str(exc)
    after = env.ctl.counters()
    runs_after = _program_stats(env) if mode == "accel" else {}
    redirected = after["redirected_bytes"] - before["redirected_bytes"]
    row: dict[str, Any] = {
        "workload": wl.key,
        "topology": wl.topology,
        "name": wl.name,
        "label": wl.label,
        "mode": mode,
        "repeat": rep,
        "metrics": metrics,
        "redirected_bytes": redirected,
        "fallback_msgs": sum(after[k] - before[k] for k in after if k.startswith("fallback_") and k != "fallback_bytes" and k != "fallback_msgs"),
        # Flow control's waits in this measurement: each costs at least one
        # TCP retransmission timeout on 6.16+ (docs/DESIGN.md), so the report
        # shows which repeats had them.
        "waits": after["moved_wait"] - before["moved_wait"],
        "wait_ms": round((after["wait_ns"] - before["wait_ns"]) / 1e6, 1),
        "seconds": round(time.monotonic() - t0, 2),
    }
    cost = {}
    for entry, (ns, runs) in runs_after.items():
        ns0, runs0 = runs_before.get(entry, (0, 0))
        if runs > runs0:
            cost[entry] = {"runs": runs - runs0, "ns_per_run": round((ns - ns0) / (runs - runs0), 1)}
    if cost:
        row["program_cost"] = cost
    # The harness checks itself: an accelerated number that was not
    # accelerated is not a result.
    if not error and mode == "accel" and redirected == 0:
        error = "accelerated mode redirected nothing (check `accel status`)"
    if not error and mode != "accel" and redirected != 0:
        error = f"{mode} mode was accelerated ({redirected} bytes redirected)"
    tool_bytes = metrics.get("tool_bytes")
    if mode == "accel" and tool_bytes:
        row["coverage"] = round(redirected / (tool_bytes * topo.hops), 3)
        if row["coverage"] < COVERAGE_MIN and not error:
            row["warning"] = f"only {row['coverage']:.0%} of the tool's bytes were redirected"
    if error:
        row["error"] = error[:500]
        row["server_log"] = [entry[-500:] for entry in log if entry]
    return row


def run(profile: Profile, pinned: bool, progress: Callable[[str], None], accel_args: tuple[str, ...] = (), program_cost: bool = False) -> dict[str, Any]:
    build_loadgen()
    check_tools()
    started = time.time()
    rows: list[dict[str, Any]] = []
    with environment(profile, pinned, accel_args, program_cost) as env:
        for wl in profile.workloads:
            for rep in range(profile.repeats):
                # ABBA: alternate the order each repeat so drift (heat, noise)
                # does not favour one mode.
                order = wl.modes if rep % 2 == 0 else tuple(reversed(wl.modes))
                for mode in order:
                    progress(f"{wl.key} [{mode} {rep + 1}/{profile.repeats}]")
                    rows.append(measure_once(env, profile, wl, mode, rep))
        counters = env.ctl.counters()
    return {
        "profile": profile.name,
        "repeats": profile.repeats,
        "seconds_per_measurement": profile.settings.seconds,
        "accel_args": list(accel_args),
        "program_cost": program_cost,
        "placement": "pinned: client (and its proxy) on CPU 0, server (and its proxy) on CPU 1" if pinned else "not pinned",
        "started": started,
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        "topologies": {k: v.description for k, v in env.topologies.items()},
        "workloads": [
            {"key": w.key, "metric": w.metric, "unit": w.unit, "higher_is_better": w.higher_is_better, "modes": list(w.modes)} for w in profile.workloads
        ],
        "controller_counters": counters,
        "measurements": rows,
    }


def total_measurements(profile: Profile) -> int:
    return sum(len(w.modes) for w in profile.workloads) * profile.repeats
