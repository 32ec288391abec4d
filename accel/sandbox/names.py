"""Names of what a sandbox makes, and removing what dead makers left.

A name is ``accel-sbx-<pid>-<random>-<tag>`` (cgroups, pin directories) or
``sbx<pid>-<random>-<tag>`` (network namespaces, kept short for `ip`): the
pid is the process that made it, so ``sweep()`` can tell a crashed run's
leftovers from a live run's sandbox (``sweep.sweep``).
"""

from __future__ import annotations

import os
import re
import uuid

CGROUP_PREFIX = "accel-sbx-"
NETNS_PREFIX = "sbx"
_PID = re.compile(r"^(?:accel-sbx-|sbx)(\d+)-[0-9a-f]{6}")


def scratch(tag: str, netns: bool = False) -> str:
    """A fresh name for a sandbox object made by this process."""
    prefix = NETNS_PREFIX if netns else CGROUP_PREFIX
    return f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:6]}-{tag}"


def _maker(name: str) -> int | None:
    m = _PID.match(name)
    return int(m[1]) if m else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftover(name: str, mine: bool = False) -> bool:
    """Whether ``name`` is a sandbox object whose maker is gone (or, with
    ``mine``, this very process: it is about to exit)."""
    pid = _maker(name)
    return pid is not None and (not _alive(pid) or (mine and pid == os.getpid()))
