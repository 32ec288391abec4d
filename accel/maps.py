"""Typed access to the pinned maps: ctypes mirrors of bpf/accel.h and readers
that work from the pins alone (so `accel status` needs no running controller).

The mirrors are checked field by field against what clang built from
bpf/accel.h (tests/integration/test_layout.py).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
from dataclasses import dataclass

from . import libbpf
from .errors import LayoutError

U32x4 = ctypes.c_uint32 * 4

POLICY_ACCELERATE = 1
POLICY_OPT_OUT = 2
POLICY_AMBIGUOUS = 3
POLICY_NAMES = {POLICY_ACCELERATE: "accelerate", POLICY_OPT_OUT: "opt-out", POLICY_AMBIGUOUS: "ambiguous"}

SOURCE_NETLINK = 1 << 0
SOURCE_KUBERNETES = 1 << 1


class SockKey(ctypes.Structure):
    _fields_ = [
        ("netns", ctypes.c_uint64),
        ("local_ip", U32x4),
        ("remote_ip", U32x4),
        ("local_port", ctypes.c_uint32),
        ("remote_port", ctypes.c_uint32),
        ("local_seq", ctypes.c_uint32),
        ("remote_seq", ctypes.c_uint32),
    ]


class EndpointKey(ctypes.Structure):
    _fields_ = [("ip", U32x4)]


class EndpointValue(ctypes.Structure):
    _fields_ = [("policy", ctypes.c_uint32), ("source", ctypes.c_uint32)]


class SockState(ctypes.Structure):
    _fields_ = [
        ("peer", SockKey),
        ("mode", ctypes.c_uint32),
        ("burst", ctypes.c_uint32),
        ("last_ns", ctypes.c_uint64),
        ("slot", ctypes.c_uint32),
        ("sender", ctypes.c_uint32),
        ("small_limit", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


STAT_FIELDS = (
    "established",
    "inserted",
    "skipped_not_local",
    "skipped_policy",
    "skipped_early_data",
    "skipped_family",
    "insert_failed",
    "insert_exists",
    "insert_error",
    "insert_no_state",
    "redirected_msgs",
    "redirected_bytes",
    "fallback_peer_missing",
    "fallback_peer_gone",
    "fallback_sticky",
    "fallback_no_state",
    "fallback_bytes",
    "fallback_backlog",
    "fallback_small_writes",
)
FALLBACK_MSG_FIELDS = ("fallback_peer_missing", "fallback_peer_gone", "fallback_sticky", "fallback_no_state", "fallback_backlog", "fallback_small_writes")


class Stats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in STAT_FIELDS]


# Structs whose layout userspace depends on, by their C name.
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "sock_key": SockKey,
    "endpoint_key": EndpointKey,
    "endpoint_value": EndpointValue,
    "sock_state": SockState,
    "stats": Stats,
}


# What each pinned map must be for this version: (type, key size, value size).
# bcc reuses a pinned map without comparing it with the program's view, so a
# map pinned by another version is found here, before anything is loaded.
LAYOUTS: dict[str, tuple[int, int, int]] = {
    "sock_hash": (libbpf.MAP_TYPE_SOCKHASH, ctypes.sizeof(SockKey), 8),
    "sock_states": (libbpf.MAP_TYPE_SK_STORAGE, 4, ctypes.sizeof(SockState)),
    "endpoints": (libbpf.MAP_TYPE_HASH, ctypes.sizeof(EndpointKey), ctypes.sizeof(EndpointValue)),
    "stats": (libbpf.MAP_TYPE_PERCPU_ARRAY, 4, ctypes.sizeof(Stats)),
    "backlog_guard": (libbpf.MAP_TYPE_HASH, ctypes.sizeof(SockKey), 4),
    "guard_active": (libbpf.MAP_TYPE_ARRAY, 4, 4),
}


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


def mirror(key: SockKey) -> SockKey:
    """The key of the other end of ``key``'s connection (what sockops stores
    as a socket's peer)."""
    return SockKey(key.netns, key.remote_ip, key.local_ip, key.remote_port, key.local_port, key.remote_seq, key.local_seq)


# --- address packing -------------------------------------------------------


def pack_ip(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """16 bytes, network order; IPv4 as v4-mapped ::ffff:a.b.c.d (like accel.h)."""
    ip = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
    if isinstance(ip, ipaddress.IPv4Address):
        return b"\x00" * 10 + b"\xff\xff" + ip.packed
    return ip.packed


def unpack_ip(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip6 = ipaddress.IPv6Address(raw)
    return ip6.ipv4_mapped or ip6


def ip_words(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> ctypes.Array:
    return U32x4.from_buffer_copy(pack_ip(addr))


def endpoint_key(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> EndpointKey:
    return EndpointKey(ip_words(addr))


Tuple5 = tuple[int, str, int, str, int]  # netns, local, port, remote, port
Identity = tuple[int, str, int, str, int, int, int]  # Tuple5 + local and remote initial sequence


@dataclass(frozen=True)
class SockEntry:
    """One socket in the sockhash, decoded."""

    netns: int
    local: str
    local_port: int
    remote: str
    remote_port: int
    local_seq: int = 0
    remote_seq: int = 0

    @staticmethod
    def from_key(key: SockKey) -> SockEntry:
        return SockEntry(
            netns=key.netns,
            local=str(unpack_ip(bytes(key.local_ip))),
            local_port=key.local_port,
            remote=str(unpack_ip(bytes(key.remote_ip))),
            remote_port=key.remote_port,
            local_seq=key.local_seq,
            remote_seq=key.remote_seq,
        )

    def tuple(self) -> Tuple5:
        """Where the socket is: its namespace (loopback) and addresses."""
        return (self.netns, self.local, self.local_port, self.remote, self.remote_port)

    def identity(self) -> Identity:
        """Which connection it is: the tuple and both initial sequence
        numbers. Two sockets can share a tuple (one whose connection ended
        and one that reused the tuple through TIME_WAIT), never an identity."""
        return (*self.tuple(), self.local_seq, self.remote_seq)

    def peer_identity(self) -> Identity:
        return (self.netns, self.remote, self.remote_port, self.local, self.local_port, self.remote_seq, self.local_seq)


@dataclass(frozen=True)
class Connection:
    """Two sockets of this node that are each other's peer (or one, if its
    peer is not, or no longer, in the map)."""

    netns: int
    a: tuple[str, int]
    b: tuple[str, int]
    both_in_map: bool


def pair_connections(entries: list[SockEntry]) -> list[Connection]:
    by_identity = {e.identity(): e for e in entries}
    seen: set[tuple] = set()
    conns = []
    for e in sorted(entries, key=lambda x: x.identity()):
        if e.identity() in seen:
            continue
        seen.add(e.identity())
        peer = by_identity.get(e.peer_identity())
        if peer is not None:
            seen.add(peer.identity())
        conns.append(Connection(e.netns, (e.local, e.local_port), (e.remote, e.remote_port), peer is not None))
    return conns


# --- the pinned maps -------------------------------------------------------


class PinnedMaps:
    """Open fds on an instance's pinned maps. Use as a context manager."""

    NAMES = ("sock_hash", "endpoints", "stats")
    GUARD_NAMES = ("backlog_guard", "guard_active")  # newer; opened on demand
    ALL_NAMES = (*NAMES, "sock_states", *GUARD_NAMES)

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
                    f"{step}: {self.pin_dir}/{name} was pinned by another accel version - "
                    "use that version's `accel`, or restart `accel run` of this one (it replaces the maps it can)"
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

    # backlog guard (pins made by this version; older pin dirs lack them)
    def _guard_fd(self, name: str) -> int:
        if name not in self.fds:
            self.fds[name] = libbpf.obj_get(os.path.join(self.pin_dir, name))
            self._require(name, "backlog guard")
        return self.fds[name]

    def socket_keys(self) -> list[SockKey]:
        self._require("sock_hash", "read sockets")
        return list(libbpf.map_keys(self.fds["sock_hash"], SockKey))

    def guarded(self) -> list[SockKey]:
        return list(libbpf.map_keys(self._guard_fd("backlog_guard"), SockKey))

    def guard(self, key: SockKey) -> None:
        libbpf.map_update(self._guard_fd("backlog_guard"), key, ctypes.c_uint32(1))

    def unguard(self, key: SockKey) -> bool:
        return libbpf.map_delete(self._guard_fd("backlog_guard"), key)

    def set_guard_active(self, count: int) -> None:
        libbpf.map_update(self._guard_fd("guard_active"), ctypes.c_uint32(0), ctypes.c_uint32(count))
