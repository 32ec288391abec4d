"""Settings of one accel instance, validated once, in one place.

An instance is identified by its pin directory: two instances (a node-wide one
and a test's private one) never share pins, state or lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import SettingsError

DEFAULT_PIN_DIR = "/sys/fs/bpf/accel"
DEFAULT_STATE_DIR = "/run/accel"

# Bounds: a sockhash entry costs ~100 bytes of kernel memory plus the psock of
# its socket; 2^22 sockets is far beyond what one node holds, and a map of
# fewer than 2 entries cannot hold one connection.
MIN_SOCKHASH = 2
MAX_SOCKHASH = 1 << 22
MIN_ENDPOINTS = 1
MAX_ENDPOINTS = 1 << 20
# A write of 1 MiB is a bulk write on every path measured: a small-write limit
# above it would move bulk streams to TCP.
MAX_SMALL_WRITE = 1 << 20


@dataclass(frozen=True)
class Settings:
    """What ``accel run`` and the other commands act on."""

    pin_dir: str = DEFAULT_PIN_DIR
    """bpffs directory holding this instance's pinned maps."""

    state_dir: str = DEFAULT_STATE_DIR
    """Directory for the run lock and the state file (cgroup, program ids)."""

    cgroup: str | None = None
    """cgroup-v2 directory to attach sockops to; None means the cgroup-v2 root."""

    sockhash_size: int = 65536
    """Max sockets in the fast path (two per connection). Fixed at first pin."""

    endpoints_size: int = 16384
    """Max local endpoint addresses. Fixed at first pin."""

    rescan_interval: float = 1.0
    """Seconds between scans for new or removed network namespaces."""

    node_tcp_budget: int = 0
    """Bytes of node TCP memory past which senders to receivers that hold
    data wait on TCP (accel/budget.py); 0: the kernel's pressure threshold,
    net.ipv4.tcp_mem[1]."""

    flow_growth_cap: float = 2.0
    """How far ahead of its reader a sender may get while the reader keeps
    reading, in multiples of what TCP's buffer autotuning lets a connection
    queue (tcp_rmem max + tcp_wmem max). Past it the sender waits on TCP, and
    on kernels from 6.16 a wait costs at least one retransmission timeout
    (docs/DESIGN.md, flow control): at 1x a bulk stream between pods waited
    in 17 of 20 runs of 3 s, at 2x in 9 of 20 (benchmarks/RESULTS.md).
    A reader that does not read never grows it: it holds what TCP would let it."""

    budget_interval: float = 0.05
    """Seconds between reads of the node's TCP memory (/proc/net/sockstat)."""

    small_write_fallback: bool = True
    """Move a socket that streams small writes to TCP, where TCP is faster
    (bpf/redir.c, small_write_stream)."""

    small_write_local: int = 2048
    """Bytes below which a write counts as small between sockets of one
    network namespace (loopback): a stream of such writes moves to TCP. The
    crossover differs between hosts (2 KiB on one, past 16 KiB on another:
    benchmarks/RESULTS.md); `python -m benchmarks.crossover` measures it.
    The same default as ACCEL_SMALL_LOCAL in bpf/tunables.h."""

    small_write_remote: int = 128
    """The same between network namespaces (pods). ACCEL_SMALL_REMOTE."""

    release: bool = True
    """Take connections that moved to TCP for good out of the sockhash, once
    no byte can be lost (accel/release.py)."""

    release_grace: float = 1.0
    """Seconds between marking a connection retiring and releasing it: a
    redirect whose verdict ran before the mark lands within it."""

    log_format: str = "console"
    """``console`` for people, ``json`` for log collectors."""

    extra_cflags: tuple[str, ...] = field(default_factory=tuple)
    """Extra -D flags for the BPF build (tests use it to build a changed program)."""

    metrics_address: str | None = "127.0.0.1:9477"
    """host:port of the metrics/health endpoint; None disables it; port 0 picks one."""

    kubernetes: bool = False
    """Take pod IPs and opt-outs from the Kubernetes API (node addresses still from netlink)."""

    kubeconfig: str | None = None
    """kubeconfig file; None means in-cluster config (service account)."""

    node_name: str | None = None
    """This node's name, to watch only its pods (spec.nodeName)."""

    watch_timeout: int = 300
    """Seconds after which the API server ends a watch (we then resume it)."""

    def __post_init__(self) -> None:
        for name in ("pin_dir", "state_dir"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or not os.path.isabs(value):
                raise SettingsError(f"{name.replace('_', '-')} must be an absolute path, got {value!r}")
            if "\x00" in value or '"' in value or "\\" in value or "\n" in value:
                raise SettingsError(f"{name.replace('_', '-')} contains a character that cannot be used: {value!r}")
        if self.cgroup is not None and (not isinstance(self.cgroup, str) or not self.cgroup):
            raise SettingsError(f"cgroup must be a path, got {self.cgroup!r}")
        _check_range("sockhash-size", self.sockhash_size, MIN_SOCKHASH, MAX_SOCKHASH)
        _check_range("endpoints-size", self.endpoints_size, MIN_ENDPOINTS, MAX_ENDPOINTS)
        if not isinstance(self.rescan_interval, (int, float)) or not (0.05 <= self.rescan_interval <= 3600):
            raise SettingsError(f"rescan-interval must be between 0.05 and 3600 seconds, got {self.rescan_interval!r}")
        if not isinstance(self.node_tcp_budget, int) or not (self.node_tcp_budget == 0 or 1 << 20 <= self.node_tcp_budget <= 1 << 44):
            raise SettingsError(f"node-tcp-budget must be 0 (auto) or between 1 MiB and 16 TiB in bytes, got {self.node_tcp_budget!r}")
        if not isinstance(self.budget_interval, (int, float)) or not (0.01 <= self.budget_interval <= 60):
            raise SettingsError(f"budget-interval must be between 0.01 and 60 seconds, got {self.budget_interval!r}")
        if not isinstance(self.flow_growth_cap, (int, float)) or not (1 <= self.flow_growth_cap <= 16):
            raise SettingsError(f"flow-growth-cap must be between 1 and 16 (times TCP's autotuning maximum), got {self.flow_growth_cap!r}")
        for name in ("small_write_local", "small_write_remote"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SMALL_WRITE:
                raise SettingsError(
                    f"{name.replace('_', '-')} must be between 1 and {MAX_SMALL_WRITE} bytes, got {value!r}",
                    fix="1 counts no write as small; `python -m benchmarks.crossover` measures this node's limits",
                )
        if not isinstance(self.release_grace, (int, float)) or not (0.1 <= self.release_grace <= 60):
            raise SettingsError(f"release-grace must be between 0.1 and 60 seconds, got {self.release_grace!r}")
        if self.metrics_address is not None:
            _host, sep, port = self.metrics_address.rpartition(":")
            if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise SettingsError(f"metrics-address must be HOST:PORT (e.g. 0.0.0.0:9477), got {self.metrics_address!r}")
        if self.kubernetes and not self.node_name:
            raise SettingsError("node-name is required with --kubernetes", fix="pass --node-name or set NODE_NAME (downward API spec.nodeName)")
        if self.kubeconfig is not None and not os.path.isfile(self.kubeconfig):
            raise SettingsError(f"kubeconfig {self.kubeconfig}: no such file")
        if not isinstance(self.watch_timeout, int) or not 1 <= self.watch_timeout <= 3600:
            raise SettingsError(f"watch-timeout must be between 1 and 3600 seconds, got {self.watch_timeout!r}")
        if self.log_format not in ("console", "json"):
            raise SettingsError(f"log-format must be 'console' or 'json', got {self.log_format!r}")

    @property
    def lock_path(self) -> str:
        return os.path.join(self.state_dir, "run.lock")

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, "state.json")


def _check_range(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
