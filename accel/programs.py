"""The datapath's BPF programs, as a table: what each one is, where its source
is, and what it attaches to. The lifecycle (`datapath.Datapath`) and the
commands that work from the pins (`control`) read this table and nothing
else, so adding a program is a row here plus its C file in bpf/.

Order matters (docs/DESIGN.md, invariant 6): rows are attached top to bottom,
and every program that attaches to a map comes before every program that
attaches to the cgroup. A socket takes the map's programs when it is inserted,
so an sk_msg program attached after sockops began inserting would miss the
sockets inserted in between. ``check_order`` enforces it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .abi import ATTACH_CGROUP_SOCK_OPS, ATTACH_SK_MSG_VERDICT, PROG_TYPE_SK_MSG, PROG_TYPE_SOCK_OPS, PROG_TYPE_SOCKET_FILTER

CGROUP = "cgroup"  # Program.target: the instance's cgroup-v2 directory
ON_DEMAND = "on demand"  # Program.target: loaded, never attached; the controller runs it (BPF_PROG_TEST_RUN)
NO_ATTACH_TYPE = -1

# bpf/ beside the package in a checkout; ACCEL_BPF_DIR where it is installed
# elsewhere (the container image).
BPF_DIR = os.environ.get("ACCEL_BPF_DIR") or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf")
KERNEL_NAME_LEN = 15  # BPF_OBJ_NAME_LEN - 1: the kernel keeps this much of a program's name


@dataclass(frozen=True)
class Program:
    """One row: a BPF program of the datapath."""

    source: str
    """C file that defines it: a name in bpf/, or an absolute path."""

    entry: str
    """Function name; its first 15 characters are the program's name in the kernel."""

    prog_type: int
    """enum bpf_prog_type."""

    attach_type: int
    """enum bpf_attach_type."""

    target: str
    """CGROUP, ON_DEMAND, or the name of the pinned map it attaches to."""

    role: str
    """What it does, in one line (shown by `accel status`)."""

    @property
    def kernel_name(self) -> str:
        return self.entry[:KERNEL_NAME_LEN]

    @property
    def on_cgroup(self) -> bool:
        return self.target == CGROUP

    @property
    def on_map(self) -> bool:
        return self.target not in (CGROUP, ON_DEMAND)

    @property
    def path(self) -> str:
        return os.path.join(BPF_DIR, self.source)


PROGRAMS: tuple[Program, ...] = (
    Program("redir.c", "accel_redir", PROG_TYPE_SK_MSG, ATTACH_SK_MSG_VERDICT, "sock_hash", "sk_msg: redirects each sendmsg() to the peer socket"),
    Program("sockops.c", "accel_sockops", PROG_TYPE_SOCK_OPS, ATTACH_CGROUP_SOCK_OPS, CGROUP, "sockops: inserts established local sockets into the sockhash"),
    Program(
        "probe.c",
        "accel_probe_queue",
        PROG_TYPE_SOCKET_FILTER,
        NO_ATTACH_TYPE,
        ON_DEMAND,
        "probe: a socket's unread redirected bytes, run by the controller before it releases a socket",
    ),
)


def check_order(programs: tuple[Program, ...]) -> None:
    """Raise ValueError unless map-attached programs all precede cgroup ones
    (invariant 6) and entries are unique in the kernel's 15 characters."""
    seen_cgroup = False
    for p in programs:
        if p.on_cgroup:
            seen_cgroup = True
        elif p.on_map and seen_cgroup:
            raise ValueError(f"program table: {p.entry} attaches to map {p.target} after a cgroup program (invariant 6: maps first)")
    names = [p.kernel_name for p in programs]
    if len(set(names)) != len(names):
        raise ValueError(f"program table: two programs share a kernel name: {names}")


check_order(PROGRAMS)


def bpf_sources() -> dict[str, str]:
    """Every file the programs are built from (`accel run --ebpf` prints them)."""
    names = sorted(n for n in os.listdir(BPF_DIR) if n.endswith((".h", ".c")))
    headers = [n for n in names if n.endswith(".h")]
    return {n: os.path.join(BPF_DIR, n) for n in (*headers, *(n for n in names if n not in headers))}
