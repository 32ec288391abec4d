"""Removing what crashed sandboxes left: namespaces, pin directories and
cgroups whose maker (the pid in the name, see names.py) has exited."""

from __future__ import annotations

import contextlib
import os
import shutil

from ..kernel import DEFAULT_BPFFS, mounts
from .names import leftover
from .topology import remove_netns


def sweep(mine: bool = False) -> list[str]:
    """Remove the sandbox namespaces, pin directories and cgroups whose maker
    has exited (and, with ``mine``, this process's own). Returns what went."""
    gone: list[str] = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/run/netns"):
            if leftover(name, mine):
                remove_netns(name)
                gone.append(f"netns {name}")
    with contextlib.suppress(OSError):
        for name in os.listdir(DEFAULT_BPFFS):
            if leftover(name, mine):
                shutil.rmtree(os.path.join(DEFAULT_BPFFS, name), ignore_errors=True)
                gone.append(f"pins {name}")
    for root in mounts("cgroup2"):
        with contextlib.suppress(OSError):
            for name in os.listdir(root):
                if leftover(name, mine):
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(root, name))
                        gone.append(f"cgroup {name}")
    return gone
