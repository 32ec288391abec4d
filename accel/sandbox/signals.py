"""A sandbox's maker stopped with SIGTERM (or SIGHUP: its terminal went
away) unwinds as it does on Ctrl-C: the context managers that made its
namespaces, cgroups, controller and pins remove them. Python's default for
those signals ends the process at once and leaves all of it behind, with
the controller still attached to its cgroup.

Only the maker itself unwinds. A child forked from it (pyroute2 forks one
for every handle on another network namespace, and ends it with SIGTERM as
soon as it has answered) inherits the handler and a copy of the maker's
stack: unwinding that copy would run the maker's clean-up from the child,
removing the cgroups and namespaces the maker is still using (seen in CI:
a benchmark's controller found its cgroup gone). Such a child dies of the
signal instead, as it would without the handler."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

_owner: int | None = None  # the pid that installed the handler


def _unwind(signum: int, _frame: FrameType | None) -> None:
    # Once: a second signal during the clean-up ends the process as before.
    signal.signal(signum, signal.SIG_DFL)
    if os.getpid() != _owner:
        os.kill(os.getpid(), signum)  # a forked child: die of it, unwind nothing
        return
    raise SystemExit(128 + signum)


def exit_on_terminate() -> None:
    """Make SIGTERM and SIGHUP raise SystemExit in the main thread (the only
    thread a handler can be set from; elsewhere this does nothing)."""
    global _owner
    if threading.current_thread() is not threading.main_thread():
        return
    _owner = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _unwind)
