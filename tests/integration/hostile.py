"""Hostile conditions for a child process, set up between fork and exec:
a private mount namespace without bpffs, and a seccomp filter that refuses
mount(2) the way container runtimes' default profiles do."""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

from accel import libc

MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
AUDIT_ARCH_X86_64 = 0xC000003E
NR_MOUNT_X86_64 = 165

SUPPORTED = platform.machine() == "x86_64"


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _deny_mount_filter() -> bytes:
    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    return b"".join(
        (
            _insn(ld_w_abs, 0, 0, 4),  # seccomp_data.arch
            _insn(jeq_k, 1, 0, AUDIT_ARCH_X86_64),
            _insn(ret_k, 0, 0, SECCOMP_RET_ALLOW),
            _insn(ld_w_abs, 0, 0, 0),  # seccomp_data.nr
            _insn(jeq_k, 0, 1, NR_MOUNT_X86_64),
            _insn(ret_k, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM),
            _insn(ret_k, 0, 0, SECCOMP_RET_ALLOW),
        )
    )


def no_bpffs_and_no_mount() -> None:
    """preexec_fn: unmount every bpffs at /sys/fs/bpf in a private mount
    namespace, then forbid mount(2) (EPERM)."""
    libc.unshare(libc.CLONE_NEWNS)
    libc.mount("none", "/", None, MS_REC | MS_PRIVATE)
    while libc.umount2("/sys/fs/bpf", MNT_DETACH) == 0:
        pass  # bpffs may be mounted more than once there
    prog = ctypes.create_string_buffer(_deny_mount_filter())
    fprog = _SockFprog(len(prog.raw) // 8, ctypes.cast(prog, ctypes.c_void_p))
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, "seccomp", ctypes.byref(fprog))
