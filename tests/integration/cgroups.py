"""A private cgroup-v2 directory per test, and moving this process in and out."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator

from accel.kernel import cgroup2_root


def own_cgroup(root: str) -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return os.path.join(root, line.strip()[3:].lstrip("/"))
    return root


def move_self(cgroup: str) -> None:
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


@contextlib.contextmanager
def private_cgroup(tag: str = "t") -> Iterator[str]:
    root = cgroup2_root(mount_if_missing=True)
    path = os.path.join(root, f"accel-test-{tag}-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    try:
        yield path
    finally:
        # Move anything left (children of ours) back to the root, then remove.
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
    inside are the cgroup's, and only they meet the programs under test."""
    root = cgroup2_root()
    before = own_cgroup(root)
    move_self(cgroup)
    try:
        yield
    finally:
        move_self(before)
