"""Typed errors. Every error names the step that failed (``message``) and,
as data of its own, what to do about it (``fix``).

    AccelError                  base; ``str(e)`` is the one line shown to users
    ├── NotRootError            a step needs CAP_SYS_ADMIN/CAP_BPF
    ├── SettingsError           a bad option or setting value
    ├── KernelError             the kernel lacks something we need
    │   ├── CgroupError         cgroup v2 missing, or the path is not cgroup v2
    │   ├── BpffsError          bpffs not mounted and not mountable, or path not on bpffs
    │   └── HeadersError        no kernel headers for bcc to compile with
    ├── CompileError            bcc could not compile bpf/*.c (detail: compiler output)
    ├── VerifierError           the kernel rejected a program (detail: the verifier log tail)
    ├── AttachError             attaching or detaching failed
    ├── AlreadyRunningError     another ``accel run`` holds the lock
    ├── NotRunningError         nothing pinned or attached to act on
    └── LayoutError             pinned maps of another accel version

The CLI catches ``AccelError`` and prints ``accel: <message> - <fix>``;
``accel doctor`` shows the fix in a column of its own. Anything else is a bug
and still gets one line plus a hint to report it.
"""

from __future__ import annotations


class AccelError(Exception):
    """Base of all errors shown to users."""

    exit_code = 1

    def __init__(self, message: str, fix: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.detail = detail  # lines that follow the one-line message (a compiler or verifier log)

    def __str__(self) -> str:
        line = f"{self.message} - {self.fix}" if self.fix else self.message
        return f"{line}\n{self.detail}" if self.detail else line


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
    """``detail`` is the tail of the verifier's log."""

    exit_code = 70


class AttachError(AccelError):
    pass


class AlreadyRunningError(AccelError):
    exit_code = 75  # EX_TEMPFAIL


class NotRunningError(AccelError):
    pass


class LayoutError(AccelError):
    """Pinned maps made by another version of accel that cannot be reused."""

    exit_code = 69  # EX_UNAVAILABLE
