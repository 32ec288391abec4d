"""An accel instance as seen from its pins, from any process: which of its
programs are attached where, its status, and taking it down. The running
controller (`agent`), `accel status`, `accel down` and the metrics endpoint
all use these; none needs the controller to be running.

An instance is its pin directory. A program is "ours" when its name is a row
of the program table and it uses a map pinned in that directory (the current
maps, or a socket map set aside at an upgrade): another instance has other
pins, so its programs never match, even on the same cgroup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from typing import Any

from . import kernel, libbpf
from .abi import MODE_NAMES, POLICY_NAMES, REASON_NAMES, STAT_FIELDS, Connection, ConnFlow, pair_connections
from .errors import AccelError, NotRunningError, SettingsError
from .maps import PinnedMaps, pinned_map_count
from .netns import cookie_names
from .programs import PROGRAMS, Program
from .settings import Settings
from .state import holder_pid, read_state, remove_state

# Socket maps of an older layout that still held sockets at an upgrade.
RETIRED_PREFIX = "retired-sock_hash-"


# --- which programs are ours ------------------------------------------------------


def instance_map_ids(pin_dir: str) -> set[int]:
    """Ids of every map pinned in ``pin_dir``."""
    ids: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(pin_dir):
            try:
                fd = libbpf.obj_get(os.path.join(pin_dir, name))
            except OSError:
                continue
            try:
                ids.add(int(libbpf.map_info(fd)["id"]))
            except OSError:
                pass
            finally:
                os.close(fd)
    return ids


def ours_on(cgroup_fd: int, program: Program, map_ids: set[int]) -> list[int]:
    """Ids of ``program``'s instances (by name) attached to the cgroup open at
    ``cgroup_fd`` that use one of ``map_ids``."""
    try:
        ids = libbpf.prog_query(cgroup_fd, program.attach_type)
    except OSError:
        return []
    found = []
    for prog_id in ids:
        try:
            fd = libbpf.prog_fd_by_id(prog_id)
        except OSError:
            continue
        try:
            _, name = libbpf.prog_info(fd)
            if name == program.kernel_name and map_ids & set(libbpf.prog_map_ids(fd)):
                found.append(prog_id)
        finally:
            os.close(fd)
    return found


def attached(pin_dir: str, cgroup: str | None, programs: Iterable[Program] = PROGRAMS) -> dict[str, list[int]]:
    """Per cgroup program of the table: ids of ours attached to ``cgroup``."""
    rows = [p for p in programs if p.on_cgroup]
    if not cgroup or not os.path.isdir(pin_dir):
        return {p.entry: [] for p in rows}
    map_ids = instance_map_ids(pin_dir)
    try:
        cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return {p.entry: [] for p in rows}
    try:
        return {p.entry: ours_on(cg_fd, p, map_ids) if map_ids else [] for p in rows}
    finally:
        os.close(cg_fd)


def detach_ids(cgroup_fd: int, program: Program, ids: Iterable[int]) -> None:
    for prog_id in ids:
        fd = libbpf.prog_fd_by_id(prog_id)
        try:
            libbpf.prog_detach(fd, cgroup_fd, program.attach_type)
        finally:
            os.close(fd)


def detach_ours(pin_dir: str, cgroup: str, programs: Iterable[Program] = PROGRAMS) -> list[int]:
    """Detach every program of this instance from ``cgroup`` (last row first).
    Connections already accelerated keep their path (invariant 7)."""
    rows = list(programs)
    found = attached(pin_dir, cgroup, rows)
    if not any(found.values()):
        return []
    done: list[int] = []
    cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for p in reversed([r for r in rows if r.on_cgroup]):
            detach_ids(cg_fd, p, found[p.entry])
            done += found[p.entry]
    finally:
        os.close(cg_fd)
    return done


# --- socket maps set aside at an upgrade ------------------------------------------------


def retired_socket_maps(pin_dir: str) -> dict[str, int]:
    """Set-aside socket maps of ``pin_dir``: path -> sockets still in it."""
    out: dict[str, int] = {}
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(pin_dir)):
            if name.startswith(RETIRED_PREFIX):
                path = os.path.join(pin_dir, name)
                with contextlib.suppress(OSError):
                    out[path] = pinned_map_count(path)
    return out


def drop_empty_retired(pin_dir: str) -> int:
    """Unpin the set-aside socket maps whose sockets have all closed; returns
    the sockets the others still hold."""
    left = 0
    for path, count in retired_socket_maps(pin_dir).items():
        if count:
            left += count
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return left


# --- removing the pins ---------------------------------------------------------------------


def remove_pins(settings: Settings, force: bool = False) -> int:
    """Detach the map-attached programs and unpin every map, if no socket uses
    them (or ``force``, which purges unread redirected bytes). Returns the
    sockets that were still in them. Raises NotRunningError when nothing is
    pinned."""
    pin_dir = settings.pin_dir
    if not os.path.isdir(pin_dir):
        raise NotRunningError(f"down: nothing pinned at {pin_dir}")
    if not os.path.isabs(pin_dir) or os.path.normpath(pin_dir) in ("/", kernel.DEFAULT_BPFFS):
        raise SettingsError(f"down: refusing to remove {pin_dir}", fix="pass the instance's own --pin-dir")
    remaining = drop_empty_retired(pin_dir)
    if PinnedMaps.exists(pin_dir):
        with PinnedMaps(pin_dir) as maps:
            remaining += maps.socket_count()
            if remaining and not force:
                return remaining
            for p in PROGRAMS:
                if p.on_map:
                    _detach_from_map(os.path.join(pin_dir, p.target), p)
    elif remaining and not force:
        return remaining
    for name in (*PinnedMaps.ALL_NAMES, *(os.path.basename(p) for p in retired_socket_maps(pin_dir))):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(pin_dir, name))
    try:
        os.rmdir(pin_dir)
    except OSError as exc:
        raise NotRunningError(f"down: {pin_dir} holds pins that are not accel's ({exc.strerror}); left in place") from exc
    return remaining


def _detach_from_map(path: str, program: Program) -> None:
    try:
        map_fd = libbpf.obj_get(path)
    except OSError:
        return
    try:
        try:
            ids = libbpf.prog_query(map_fd, program.attach_type)
        except OSError:
            ids = []
        for prog_id in ids:
            fd = libbpf.prog_fd_by_id(prog_id)
            try:
                libbpf.prog_detach(fd, map_fd, program.attach_type)
            except OSError:
                pass
            finally:
                os.close(fd)
    finally:
        os.close(map_fd)


# --- the status model -------------------------------------------------------------------------


def status(settings: Settings) -> dict[str, Any]:
    """Everything `accel status` shows, from the kernel (the state file only
    says what the last `accel run` recorded)."""
    state = read_state(settings)
    pinned = PinnedMaps.exists(settings.pin_dir)
    cgroup = state.get("cgroup")
    info: dict[str, Any] = {
        "pin_dir": settings.pin_dir,
        "pinned": pinned,
        "kernel": kernel.kernel_release(),
        "cgroup": cgroup,
        "running_pid": holder_pid(settings.lock_path),
        "attached": False,
        "sockops_ids": [],
        "programs": {},
        "sockets": 0,
        "retired_sockets": 0,  # in socket maps an older version pinned (kept until they close)
        "endpoints": 0,
        "endpoints_by_policy": {},
        "map_sizes": {},
        "headers": state.get("headers"),
        "small_writes": state.get("small_writes"),  # the rule as the last run built it (None: not recorded)
        "run_state": {k: state.get(k) for k in ("pid", "sockops_id", "redir_id", "programs", "started", "stopped")},
    }
    counters: dict[str, int] = {name: 0 for name in STAT_FIELDS} | {"fallback_msgs": 0}
    if pinned:
        with PinnedMaps(settings.pin_dir) as maps:
            counters = maps.stats()
            info["sockets"] = maps.socket_count()
            eps = maps.endpoints()
            info["map_sizes"] = maps.map_sizes()
        by_policy: dict[str, int] = {}
        for v in eps.values():
            name = POLICY_NAMES.get(v.policy, str(v.policy))
            by_policy[name] = by_policy.get(name, 0) + 1
        info["endpoints"] = len(eps)
        info["endpoints_by_policy"] = by_policy
        info["retired_sockets"] = sum(retired_socket_maps(settings.pin_dir).values())
        info["programs"] = attached(settings.pin_dir, cgroup)
        info["sockops_ids"] = info["programs"].get("accel_sockops", [])
        info["attached"] = all(info["programs"].values()) and bool(info["programs"])
    info.update(counters)
    info["counters"] = sorted(counters)
    return info


def connections(settings: Settings) -> dict[str, Any]:
    """The accelerated connections (`accel conns`): both ends of each, the
    namespace of loopback ones, and each end's path (redirecting, waiting on
    TCP, or on TCP for good and why, with its waits and returns); then the
    connections that were released (out of the sockhash, plain TCP, open)."""
    if not PinnedMaps.exists(settings.pin_dir):
        raise NotRunningError(f"conns: nothing pinned at {settings.pin_dir}", fix="start it with `accel run`")
    with PinnedMaps(settings.pin_dir) as maps:
        entries = maps.sockets()
        flows = maps.conn_flows()
    now = time.monotonic_ns()  # bpf_ktime_get_ns() is CLOCK_MONOTONIC
    by_id = {e.identity(): f for e, f in flows}
    in_map = {e.identity() for e in entries}
    released = [e for e, _ in flows if e.identity() not in in_map]
    names = cookie_names() if any(e.netns for e in (*entries, *released)) else {}

    def row(c: Connection, is_released: bool) -> dict[str, Any]:
        return {
            "a": _hostport(*c.a),
            "b": _hostport(*c.b),
            "netns_cookie": c.netns,
            "netns": (names.get(c.netns, "?") if c.netns else None),
            "both_ends_accelerated": c.both_in_map and not is_released,
            "released": is_released,
            "a_path": _path(by_id.get(c.a_id), now),
            "b_path": _path(by_id.get(c.b_id), now),
        }

    rows = [row(c, False) for c in pair_connections(entries)] + [row(c, True) for c in pair_connections(released)]
    return {"connections": rows, "sockets": len(entries), "released": sum(r["released"] for r in rows)}


def _path(flow: ConnFlow | None, now_ns: int) -> dict[str, Any]:
    """One end's path, from its conn_flows entry (none: it never changed, so
    everything it sent was redirected)."""
    if flow is None:
        return {"mode": "redirect", "reason": None, "waits": 0, "returns": 0, "waited_s": 0.0, "since_s": None}
    return {
        "mode": MODE_NAMES.get(flow.mode, str(flow.mode)),
        "reason": REASON_NAMES.get(flow.reason, str(flow.reason)) if flow.reason else None,
        "waits": flow.waits,
        "returns": flow.returns,
        "waited_s": round(flow.wait_ns / 1e9, 6),
        "since_s": round(max(0, now_ns - flow.changed_ns) / 1e9, 3),
    }


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- down --------------------------------------------------------------------------------------


def down(settings: Settings, force: bool = False, wait_s: float = 0.0, cgroup: str | None = None) -> dict[str, Any]:
    """Stop the instance's `accel run` (SIGTERM), detach its programs from its
    cgroup, and remove its pins once no socket uses them (``wait_s`` seconds
    at most), or at once with ``force``. ``removed`` says whether anything of
    the instance is left."""
    if wait_s < 0:
        raise SettingsError(f"--wait must be >= 0, got {wait_s}")
    result: dict[str, Any] = {"stopped_pid": None, "detached": [], "remaining_sockets": 0, "removed": False}
    pid = holder_pid(settings.lock_path)
    if pid and pid > 0:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while holder_pid(settings.lock_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        if holder_pid(settings.lock_path):
            raise AccelError(f"down: accel run (pid {pid}) did not stop within 30 s", fix=f"check its log, or kill -KILL {pid} and run `accel down` again")
        result["stopped_pid"] = pid
    state = read_state(settings)
    for cg in {c for c in (state.get("cgroup"), cgroup) if c}:
        result["detached"] += detach_ours(settings.pin_dir, cg)
    if not os.path.isdir(settings.pin_dir):
        remove_state(settings)
        result["removed"] = True
        return result
    deadline = time.monotonic() + wait_s
    while True:
        remaining = remove_pins(settings, force=force)
        if remaining == 0 or force or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    result["remaining_sockets"] = remaining
    result["removed"] = force or remaining == 0
    if result["removed"]:
        remove_state(settings)
    return result
