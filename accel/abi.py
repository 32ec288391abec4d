"""The ABI between the BPF programs and userspace, as data: the ctypes
mirrors of every struct in bpf/accel.h, the kernel's enum values accel uses,
counter names, and the packing of addresses and keys. Nothing here touches
the kernel (no libbpf), so pure code (the endpoint table, the Kubernetes
source, decoding) can use it without loading anything.

The mirrors are checked field by field against what clang built from
bpf/accel.h (tests/integration/test_layout.py).
"""

from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass

# enum bpf_map_type / bpf_prog_type / bpf_attach_type / helper ids (uapi/linux/bpf.h)
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_HASH = 9
MAP_TYPE_SOCKHASH = 18
MAP_TYPE_SK_STORAGE = 24
MAP_TYPE_RINGBUF = 27
PROG_TYPE_SOCKET_FILTER = 1
PROG_TYPE_SOCK_OPS = 13
PROG_TYPE_SK_MSG = 16
PROG_TYPE_CGROUP_SOCK_ADDR = 18
ATTACH_CGROUP_INET4_CONNECT = 10
ATTACH_CGROUP_SOCK_OPS = 3
ATTACH_SK_MSG_VERDICT = 7
FUNC_SOCK_HASH_UPDATE = 70
FUNC_MSG_REDIRECT_HASH = 71
FUNC_SK_STORAGE_GET = 107
FUNC_GET_NETNS_COOKIE = 122

U32x4 = ctypes.c_uint32 * 4

# enum accel_policy
POLICY_ACCELERATE = 1
POLICY_OPT_OUT = 2
POLICY_AMBIGUOUS = 3
POLICY_NAMES = {POLICY_ACCELERATE: "accelerate", POLICY_OPT_OUT: "opt-out", POLICY_AMBIGUOUS: "ambiguous"}

# endpoint_value.source bits: who reported an endpoint
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
        ("allowance", ctypes.c_uint32),
        ("self", ctypes.c_uint64),
        ("peer_sk", ctypes.c_uint64),
        ("wait_since", ctypes.c_uint64),
        ("q_expect", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("read_ns", ctypes.c_uint64),
    ]


class FlowConfig(ctypes.Structure):
    _fields_ = [("node_over", ctypes.c_uint32), ("max_bound", ctypes.c_uint32), ("retiring", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class ConnFlow(ctypes.Structure):
    _fields_ = [
        ("mode", ctypes.c_uint32),
        ("reason", ctypes.c_uint32),
        ("waits", ctypes.c_uint32),
        ("returns", ctypes.c_uint32),
        ("wait_ns", ctypes.c_uint64),
        ("changed_ns", ctypes.c_uint64),
    ]


class AccelEvent(ctypes.Structure):
    _fields_ = [("key", SockKey), ("reason", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("ns", ctypes.c_uint64)]


# enum accel_reason: why a socket moved to TCP for good (AccelEvent.reason)
REASON_PEER_MISSING = 1
REASON_PEER_GONE = 2
REASON_SMALL_WRITES = 3
REASON_NO_PEER_INFO = 4
REASON_RETIRING = 5
REASON_SHUT = 6
REASON_NAMES = {
    REASON_PEER_MISSING: "peer_missing",
    REASON_PEER_GONE: "peer_gone",
    REASON_SMALL_WRITES: "small_writes",
    REASON_NO_PEER_INFO: "no_peer_info",
    REASON_RETIRING: "retiring",
    REASON_SHUT: "shut",
}

# What bpf/probe.c answers when it cannot read a socket's queue.
PROBE_UNKNOWN = 0xFFFFFFFF
PROBE_NO_PSOCK = 0xFFFFFFFE


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
    "fallback_wait",
    "moved_wait",
    "returned",
    "wait_ns",
    "fallback_no_peer_info",
    "fallback_retiring",
    "fallback_small_writes",
    "events_lost",
    "fallback_shut",
)
FALLBACK_MSG_FIELDS = (
    "fallback_peer_missing",
    "fallback_peer_gone",
    "fallback_sticky",
    "fallback_no_state",
    "fallback_wait",
    "fallback_no_peer_info",
    "fallback_retiring",
    "fallback_small_writes",
    "fallback_shut",
)


class Stats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in STAT_FIELDS]


# Structs whose layout userspace depends on, by their C name.
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "sock_key": SockKey,
    "endpoint_key": EndpointKey,
    "endpoint_value": EndpointValue,
    "sock_state": SockState,
    "flow_config": FlowConfig,
    "conn_flow": ConnFlow,
    "accel_event": AccelEvent,
    "stats": Stats,
}


# enum accel_sock_mode
MODE_NEW = 0
MODE_REDIRECT = 1
MODE_TCP = 2
MODE_WAIT = 3
MODE_NAMES = {MODE_NEW: "new", MODE_REDIRECT: "redirect", MODE_TCP: "tcp", MODE_WAIT: "wait"}


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
    a_id: Identity  # which sockets: end A's identity, and end B's
    b_id: Identity


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
        conns.append(Connection(e.netns, (e.local, e.local_port), (e.remote, e.remote_port), peer is not None, e.identity(), e.peer_identity()))
    return conns
