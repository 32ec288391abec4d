"""The node's TCP memory budget.

The datapath bounds each receiver's queue like TCP would (bpf/redir.c), but
many slow receivers together hold many bounds, and redirected bytes are
charged to the node's TCP memory: past the kernel's hard limit a redirect
fails with ENOMEM where TCP would only have slowed down. So the controller
watches the node's TCP memory (/proc/net/sockstat, one read every 50 ms) and,
above the budget, raises a flag (flow_config.node_over) that makes every
sender whose receiver holds more than a few KiB wait on TCP, where the
kernel's own memory-pressure handling applies; the flag drops again below
90% of the budget. The budget defaults to the kernel's pressure threshold,
net.ipv4.tcp_mem[1].
"""

from __future__ import annotations

import threading
from typing import Any

from .kernel import PAGE, tcp_mem_pages, tcp_memory_bytes
from .maps import PinnedMaps

FALLBACK_BUDGET = 1 << 30  # where tcp_mem cannot be read


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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """One round: raise or drop the flag; returns whether the node is over."""
        mem = tcp_memory_bytes()
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
        """Check every ``interval`` seconds in a thread of its own."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check()
                except Exception as exc:  # keep watching; say why this round failed
                    self.log.warning("TCP memory check failed; retrying", error=f"{type(exc).__name__}: {exc}"[:300])
                    self._stop.wait(1.0)

        self._thread = threading.Thread(target=loop, name="tcp-budget", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
