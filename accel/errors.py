"""Typed errors. Every message names the step that failed and what to do.

    AccelError                  base; ``str(e)`` is the one line shown to users
    ├── NotRootError            a step needs CAP_SYS_ADMIN/CAP_BPF
    ├── SettingsError           a bad option or setting value
    ├── KernelError             the kernel lacks something we need
    │   ├── CgroupError         cgroup v2 missing, or the path is not cgroup v2
    │   ├── BpffsError          bpffs not mounted and not mountable, or path not on bpffs
    │   └── HeadersError        no kernel headers for bcc to compile with
    ├── CompileError            bcc could not compile bpf/*.c
    ├── VerifierError           the kernel rejected a program (carries the log tail)
    ├── AttachError             attaching or detaching failed
    ├── AlreadyRunningError     another ``accel run`` holds the lock
    └── NotRunningError         nothing pinned or attached to act on

The CLI catches ``AccelError`` and prints ``accel: <message>``; anything else is
a bug and still gets one line plus a hint to report it.
"""

from __future__ import annotations


class AccelError(Exception):
    """Base of all errors shown to users."""

    exit_code = 1


class NotRootError(AccelError):
    exit_code = 77  # EX_NOPERM


class SettingsError(AccelError):
    exit_code = 64  # EX_USAGE


class KernelError(AccelError):
    exit_code = 69  # EX_UNAVAILABLE


class CgroupError(KernelError):
    pass


class BpffsError(KernelError):
    pass


class HeadersError(KernelError):
    pass


class CompileError(AccelError):
    exit_code = 70


class VerifierError(AccelError):
    exit_code = 70

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message + (f"\n--- verifier log (last lines) ---\n{log_tail}" if log_tail else ""))
        self.log_tail = log_tail


class AttachError(AccelError):
    pass


class AlreadyRunningError(AccelError):
    exit_code = 75  # EX_TEMPFAIL


class NotRunningError(AccelError):
    pass


class LayoutError(AccelError):
    """Pinned maps made by another version of accel that cannot be reused."""

    exit_code = 69  # EX_UNAVAILABLE
