"""The node's TCP memory budget.

The datapath bounds each receiver's queue like TCP would (bpf/redir.c), but
many slow receivers together hold many bounds, and redirected bytes are
charged to the node's TCP memory: past the kernel's hard limit a redirect
fails with ENOMEM where TCP would only have slowed down. So the controller
watches the node's TCP memory (/proc/net/sockstat) and, above the budget, raises a flag (flow_config.node_over) that makes every
sender whose receiver holds more than a few KiB wait on TCP, where the
kernel's own memory-pressure handling applies; the flag drops again below
90% of the budget. The budget defaults to the kernel's pressure threshold,
net.ipv4.tcp_mem[1].

How often it reads follows the headroom, not a fixed rate: every 50 ms
near the threshold, and as rarely as once a second when TCP memory could not
reach the threshold sooner even growing at GROWTH_RATE. An idle node costs
one read a second (at a fixed 50 ms the reads were the idle controller's
largest cost: about 40% of its samples at 1,000 namespaces).
"""

from __future__ import annotations

import threading
from typing import Any

from .kernel import PAGE, tcp_mem_pages, tcp_memory_bytes
from .maps import PinnedMaps

FALLBACK_BUDGET = 1 << 30  # where tcp_mem cannot be read
# A bound on how fast a node's TCP memory grows: receivers that read nothing
# filled at most 1.5 GB/s on the development machine (flow-control soak);
# 4 GiB/s leaves room for a faster node.
GROWTH_RATE = 4 << 30
LONGEST_WAIT = 1.0  # seconds between reads however much headroom there is


def next_wait(mem: int, threshold: int, shortest: float) -> float:
    """Seconds until the next read: the time TCP memory needs, growing at
    GROWTH_RATE, to reach the threshold, between ``shortest`` and LONGEST_WAIT."""
    return min(LONGEST_WAIT, max(shortest, (threshold - mem) / GROWTH_RATE))


def default_budget() -> int:
    pressure = tcp_mem_pages()[1]
    return pressure * PAGE if pressure > 0 else FALLBACK_BUDGET


class NodeBudget:
    def __init__(self, pin_dir: str, budget: int, log: Any) -> None:
        self.pin_dir = pin_dir
        self.budget = budget
        self.log = log
        self.over = False
        self.rounds_over = 0
        self.last_mem = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """One round: raise or drop the flag; returns whether the node is over."""
        mem = self.last_mem = tcp_memory_bytes()
        over = mem > (self.budget * 9 // 10 if self.over else self.budget)
        if over != self.over:
            with PinnedMaps(self.pin_dir) as maps:
                maps.set_flow_config(node_over=over)
            self.over = over
            self.log.warning(
                "node TCP memory over its budget: senders to receivers that hold data wait on TCP" if over else "node TCP memory back under its budget",
                tcp_memory_mib=round(mem / 2**20, 1),
                budget_mib=round(self.budget / 2**20, 1),
            )
        self.rounds_over += over
        return over

    def start(self, interval: float) -> None:
        """Check in a thread of its own: every ``interval`` seconds near the
        threshold, less often with headroom (next_wait)."""

        def loop() -> None:
            wait = interval
            while not self._stop.wait(wait):
                try:
                    over = self.check()
                    # Over: the flag drops at 90%, so watch at the short interval.
                    wait = interval if over else next_wait(self.last_mem, self.budget, interval)
                except Exception as exc:  # keep watching; say why this round failed
                    self.log.warning("TCP memory check failed; retrying", error=f"{type(exc).__name__}: {exc}"[:300])
                    self._stop.wait(1.0)

        self._thread = threading.Thread(target=loop, name="tcp-budget", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
