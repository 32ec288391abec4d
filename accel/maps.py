"""Typed access to an instance's pinned maps, through the bpf syscall: read
and write them from any process (so `accel status` needs no running
controller), and check that each pin has this version's layout before it is
used (bcc reuses a pinned map whatever its layout)."""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

from . import libbpf
from .abi import (
    FALLBACK_MSG_FIELDS,
    MAP_TYPE_ARRAY,
    MAP_TYPE_HASH,
    MAP_TYPE_LRU_HASH,
    MAP_TYPE_PERCPU_ARRAY,
    MAP_TYPE_RINGBUF,
    MAP_TYPE_SK_STORAGE,
    MAP_TYPE_SOCKHASH,
    STAT_FIELDS,
    ConnFlow,
    EndpointKey,
    EndpointValue,
    FlowConfig,
    SockEntry,
    SockKey,
    SockState,
    Stats,
    endpoint_key,
    unpack_ip,
)
from .errors import LayoutError

# What each pinned map must be for this version: (type, key size, value size).
# bcc reuses a pinned map without comparing it with the program's view, so a
# map pinned by another version is found here, before anything is loaded.
LAYOUTS: dict[str, tuple[int, int, int]] = {
    "sock_hash": (MAP_TYPE_SOCKHASH, ctypes.sizeof(SockKey), 8),
    "sock_states": (MAP_TYPE_SK_STORAGE, 4, ctypes.sizeof(SockState)),
    "endpoints": (MAP_TYPE_HASH, ctypes.sizeof(EndpointKey), ctypes.sizeof(EndpointValue)),
    "stats": (MAP_TYPE_PERCPU_ARRAY, 4, ctypes.sizeof(Stats)),
    "sock_ptrs": (MAP_TYPE_LRU_HASH, ctypes.sizeof(SockKey), 8),
    "flow": (MAP_TYPE_ARRAY, 4, ctypes.sizeof(FlowConfig)),
    "retiring": (MAP_TYPE_HASH, ctypes.sizeof(SockKey), 4),
    "events": (MAP_TYPE_RINGBUF, 0, 0),
    "conn_flows": (MAP_TYPE_LRU_HASH, ctypes.sizeof(SockKey), ctypes.sizeof(ConnFlow)),
}

# flow_config is one value that two threads of the controller change (the
# node budget, release): each change is a read-modify-write under this lock.
_FLOW_LOCK = threading.Lock()


@dataclass(frozen=True)
class Mismatch:
    name: str
    pinned: tuple[int, int, int]
    wanted: tuple[int, int, int]

    def describe(self) -> str:
        fields = ("type", "key", "value")
        diff = [f"{f} {p} here, {w} in this version" for f, p, w in zip(fields, self.pinned, self.wanted, strict=True) if p != w]
        return f"{self.name}: " + ", ".join(diff)


def layout_of(fd: int) -> tuple[int, int, int]:
    info = libbpf.map_info(fd)
    return int(info["type"]), int(info["key_size"]), int(info["value_size"])


def layout_mismatches(pin_dir: str) -> list[Mismatch]:
    """Pinned maps of ``pin_dir`` whose type or sizes differ from this version's."""
    out = []
    for name, wanted in LAYOUTS.items():
        path = os.path.join(pin_dir, name)
        if not os.path.exists(path):
            continue
        fd = libbpf.obj_get(path)
        try:
            pinned = layout_of(fd)
        finally:
            os.close(fd)
        if pinned != wanted:
            out.append(Mismatch(name, pinned, wanted))
    return out


# --- the pinned maps -------------------------------------------------------


class PinnedMaps:
    """Open fds on an instance's pinned maps. Use as a context manager."""

    NAMES = ("sock_hash", "endpoints", "stats")  # opened at once
    ALL_NAMES = (*NAMES, "sock_states", "sock_ptrs", "flow", "retiring", "events", "conn_flows")

    def __init__(self, pin_dir: str) -> None:
        self.pin_dir = pin_dir
        self.fds: dict[str, int] = {}
        self._checked: set[str] = set()

    @staticmethod
    def exists(pin_dir: str) -> bool:
        return all(os.path.exists(os.path.join(pin_dir, n)) for n in PinnedMaps.NAMES)

    def __enter__(self) -> PinnedMaps:
        try:
            for name in self.NAMES:
                self.fds[name] = libbpf.obj_get(os.path.join(self.pin_dir, name))
        except BaseException:
            self.close()
            raise
        return self

    def _require(self, name: str, step: str) -> None:
        """Refuse to read a map through this version's structs when another
        version pinned it with a different layout."""
        if name not in self._checked:
            if layout_of(self.fds[name]) != LAYOUTS[name]:
                raise LayoutError(
                    f"{step}: {self.pin_dir}/{name} was pinned by another accel version",
                    fix="use that version's `accel`, or restart `accel run` of this one (it replaces the maps it can)",
                )
            self._checked.add(name)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    # stats
    def stats(self) -> dict[str, int]:
        self._require("stats", "read counters")
        ncpu = libbpf.possible_cpus()
        values = (Stats * ncpu)()
        key = ctypes.c_uint32(0)
        libbpf.map_lookup(self.fds["stats"], key, values)
        total = {name: 0 for name in STAT_FIELDS}
        for cpu in range(ncpu):
            for name in STAT_FIELDS:
                total[name] += getattr(values[cpu], name)
        total["fallback_msgs"] = sum(total[n] for n in FALLBACK_MSG_FIELDS)
        return total

    # sockets
    def sockets(self) -> list[SockEntry]:
        return [SockEntry.from_key(k) for k in self.socket_keys()]

    def socket_count(self) -> int:
        return libbpf.map_count(self.fds["sock_hash"])

    def map_sizes(self) -> dict[str, int]:
        return {name: int(libbpf.map_info(fd)["max_entries"]) for name, fd in self.fds.items()}

    # endpoints
    def endpoints(self) -> dict[str, EndpointValue]:
        self._require("endpoints", "read endpoints")
        out = {}
        for key in libbpf.map_keys(self.fds["endpoints"], EndpointKey):
            val = EndpointValue()
            if libbpf.map_lookup(self.fds["endpoints"], key, val):
                out[str(unpack_ip(bytes(key.ip)))] = val
        return out

    def set_endpoint(self, addr: str, policy: int, source: int) -> None:
        self._require("endpoints", "write endpoints")
        libbpf.map_update(self.fds["endpoints"], endpoint_key(addr), EndpointValue(policy, source))

    def delete_endpoint(self, addr: str) -> bool:
        self._require("endpoints", "delete endpoints")
        return libbpf.map_delete(self.fds["endpoints"], endpoint_key(addr))

    def _fd(self, name: str, step: str) -> int:
        """A map of ALL_NAMES opened on first use, after its layout check."""
        if name not in self.fds:
            self.fds[name] = libbpf.obj_get(os.path.join(self.pin_dir, name))
        self._require(name, step)
        return self.fds[name]

    def socket_keys(self) -> list[SockKey]:
        self._require("sock_hash", "read sockets")
        return list(libbpf.map_keys(self.fds["sock_hash"], SockKey))

    # flow control
    def flow_config(self) -> FlowConfig:
        cfg = FlowConfig()
        libbpf.map_lookup(self._fd("flow", "read flow control"), ctypes.c_uint32(0), cfg)
        return cfg

    def set_flow_config(self, node_over: bool | None = None, max_bound: int | None = None, retiring: int | None = None) -> None:
        """Change what the datapath knows of the node (the rest is kept)."""
        with _FLOW_LOCK:
            cfg = self.flow_config()
            if node_over is not None:
                cfg.node_over = int(node_over)
            if max_bound is not None:
                cfg.max_bound = min(max_bound, 0xFFFFFFFF)
            if retiring is not None:
                cfg.retiring = min(retiring, 0xFFFFFFFF)
            libbpf.map_update(self._fd("flow", "write flow control"), ctypes.c_uint32(0), cfg)

    # release
    def has_socket(self, key: SockKey) -> bool:
        self._require("sock_hash", "look a socket up")
        return libbpf.map_lookup(self.fds["sock_hash"], key, ctypes.c_uint64())

    def delete_socket(self, key: SockKey) -> bool:
        """Take a socket out of the sockhash (it becomes a plain TCP socket;
        the kernel drops whatever its psock still queues: see release.py)."""
        self._require("sock_hash", "release a socket")
        return libbpf.map_delete(self.fds["sock_hash"], key)

    def retiring_keys(self) -> list[SockKey]:
        return list(libbpf.map_keys(self._fd("retiring", "read the retiring marks"), SockKey))

    def mark_retiring(self, keys: list[SockKey], reason: int) -> None:
        fd = self._fd("retiring", "mark sockets retiring")
        # sk_msg looks a mark up only while the count is non-zero: the count
        # goes up before the marks go in, so that no mark is ever in the map
        # unseen; the exact count follows (unmark_retiring lowers it after
        # the marks are gone, the same way round).
        self.set_flow_config(retiring=libbpf.map_count(fd) + len(keys))
        for key in keys:
            libbpf.map_update(fd, key, ctypes.c_uint32(reason))
        self.set_flow_config(retiring=libbpf.map_count(fd))

    def unmark_retiring(self, keys: list[SockKey]) -> None:
        fd = self._fd("retiring", "unmark sockets retiring")
        for key in keys:
            libbpf.map_delete(fd, key)
        self.set_flow_config(retiring=libbpf.map_count(fd))

    # per-socket changes of path (accel conns)
    def conn_flows(self) -> list[tuple[SockEntry, ConnFlow]]:
        """Every socket that changed mode, by its own key (bpf/accel.h,
        struct conn_flow). Empty when this instance's programs predate the map."""
        if not os.path.exists(os.path.join(self.pin_dir, "conn_flows")):
            return []
        fd = self._fd("conn_flows", "read the sockets' changes of path")
        out = []
        for key in libbpf.map_keys(fd, SockKey):
            val = ConnFlow()
            if libbpf.map_lookup(fd, key, val):  # gone meanwhile (closed): skip
                out.append((SockEntry.from_key(key), val))
        return out

    def events_fd(self) -> int:
        return self._fd("events", "read datapath events")


def pinned_map_count(path: str) -> int:
    """Entries of the map pinned at ``path``, whatever its key type."""
    fd = libbpf.obj_get(path)
    try:
        return libbpf.map_count(fd)
    finally:
        os.close(fd)


def pinned_map_id(path: str) -> int:
    fd = libbpf.obj_get(path)
    try:
        return int(libbpf.map_info(fd)["id"])
    finally:
        os.close(fd)
