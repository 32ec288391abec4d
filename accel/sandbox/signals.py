"""A sandbox's maker stopped with SIGTERM (or SIGHUP: its terminal went
away) unwinds as it does on Ctrl-C: the context managers that made its
namespaces, cgroups, controller and pins remove them. Python's default for
those signals ends the process at once and leaves all of it behind, with
the controller still attached to its cgroup."""

from __future__ import annotations

import signal
import threading
from types import FrameType


def _unwind(signum: int, _frame: FrameType | None) -> None:
    # Once: a second signal during the clean-up ends the process as before.
    signal.signal(signum, signal.SIG_DFL)
    raise SystemExit(128 + signum)


def exit_on_terminate() -> None:
    """Make SIGTERM and SIGHUP raise SystemExit in the main thread (the only
    thread a handler can be set from; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _unwind)
