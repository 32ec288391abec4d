"""The few libc calls Python's standard library lacks (statfs, mount, setns,
unshare), through one ctypes handle. Each returns normally or raises OSError
with the errno and the call that failed."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def statfs_type(path: str) -> int:
    """f_type of the filesystem holding ``path`` (statfs(2))."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit
    _check(_libc.statfs(path.encode(), buf), f"statfs {path}")
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def mount(source: str, target: str, fstype: str | None, flags: int = 0) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None), f"mount -t {fstype} {target}")


def umount2(target: str, flags: int) -> int:
    """0 on success, -1 on failure (callers loop until it fails)."""
    return int(_libc.umount2(target.encode(), flags))


def setns(fd: int, nstype: int, what: str) -> None:
    """Move the calling THREAD into the namespace open at ``fd``."""
    _check(_libc.setns(fd, nstype), f"setns {what}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def prctl(option: int, arg2: int, what: str, arg3: object = 0) -> None:
    _check(_libc.prctl(option, arg2, arg3, 0, 0), what)


# inotify(7)
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_ONLYDIR = 0x1000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000


def inotify_init() -> int:
    fd = int(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"inotify_init1: {os.strerror(err)}")
    return fd


def inotify_watch(fd: int, path: str, mask: int) -> int:
    wd = int(_libc.inotify_add_watch(fd, path.encode(), mask))
    if wd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
    return wd


def inotify_events(data: bytes) -> list[tuple[int, int, str]]:
    """(watch descriptor, mask, name) of each event in what read() returned."""
    out, off = [], 0
    while off + 16 <= len(data):
        wd, mask, _cookie, length = struct.unpack_from("iIII", data, off)
        name = data[off + 16 : off + 16 + length].split(b"\0", 1)[0].decode(errors="replace")
        out.append((wd, mask, name))
        off += 16 + length
    return out
