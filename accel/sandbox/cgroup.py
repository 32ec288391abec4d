"""A private cgroup-v2 directory, and moving this process in and out of one.
A program attached to it acts only on sockets made by processes inside."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from ..kernel import cgroup2_root
from .names import scratch


def own_cgroup(root: str | None = None) -> str:
    """This process's cgroup-v2 directory."""
    root = root or cgroup2_root()
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return os.path.join(root, line.strip()[3:].lstrip("/"))
    return root


def move_self(cgroup: str) -> None:
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


@contextlib.contextmanager
def private_cgroup(tag: str = "t", parent: str | None = None) -> Iterator[str]:
    """A new, empty cgroup under ``parent`` (default: the cgroup-v2 root),
    removed afterwards; whatever is still in it goes back to the root first."""
    root = cgroup2_root(mount_if_missing=True)
    path = os.path.join(parent or root, scratch(tag))
    os.mkdir(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError), open(os.path.join(path, "cgroup.procs")) as f:
            for pid in f.read().split():
                with contextlib.suppress(OSError), open(os.path.join(root, "cgroup.procs"), "w") as r:
                    r.write(pid)
        for _ in range(50):
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.1)


@contextlib.contextmanager
def inside(cgroup: str) -> Iterator[None]:
    """This process (all its threads) in ``cgroup`` for the body: sockets made
    inside are the cgroup's, and only they meet the programs under test. Back
    where it was afterwards (or, failing that, the root, always allowed)."""
    root = cgroup2_root()
    before = own_cgroup(root)
    move_self(cgroup)
    try:
        yield
    finally:
        try:
            move_self(before)
        except OSError:
            move_self(root)
