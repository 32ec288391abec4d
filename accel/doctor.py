"""`accel doctor`: every requirement, pass or fail, with the fix for each
failure. Read-only: it mounts nothing and attaches nothing."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from . import kernel
from .datapath import bcc_location
from .errors import AccelError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # passes, but the operator should know


def _bcc() -> Check:
    where, error = bcc_location()
    if where:
        return Check("bcc (python3-bpfcc)", True, f"importable from {where}")
    return Check("bcc (python3-bpfcc)", False, error, "apt-get install python3-bpfcc, and use a venv made with --system-site-packages")


def _cgroup2() -> Check:
    try:
        return Check("cgroup v2", True, f"mounted at {kernel.cgroup2_root(mount_if_missing=False)}")
    except AccelError as exc:
        return Check("cgroup v2", False, "no cgroup2 mount", exc.fix)


def _bpffs() -> Check:
    found = kernel.mounts("bpf")
    if found:
        return Check("bpffs", True, f"mounted at {', '.join(found)}")
    if os.path.isdir(kernel.DEFAULT_BPFFS):
        return Check("bpffs", True, f"not mounted; `accel run` mounts it at {kernel.DEFAULT_BPFFS}")
    return Check("bpffs", False, f"{kernel.DEFAULT_BPFFS} does not exist", "mount -t bpf bpf /sys/fs/bpf (in a container: mount it from the host)")


def _headers() -> Check:
    try:
        h = kernel.find_headers(create=False)
        return Check("kernel headers", True, f"{h.note} ({h.path})")
    except AccelError as exc:
        return Check("kernel headers", False, "none found", exc.fix)


def _sockmap_fixes() -> Check:
    fixed, why = kernel.sockmap_fixes(kernel.upstream_version())
    name = "sockmap data-loss fixes"
    if fixed:
        return Check(name, True, why)
    return Check(name, True, "missing" if fixed is False else "unknown", why, warning=True)


def run_checks() -> list[Check]:
    is_root = os.geteuid() == 0 and kernel.has_admin_caps()
    detail = f"euid {os.geteuid()}" + ("" if kernel.has_admin_caps() else ", no CAP_SYS_ADMIN")
    checks = [Check("root", is_root, detail, "" if is_root else "run as root with CAP_BPF/CAP_SYS_ADMIN (sudo accel doctor)")]
    checks.append(Check("kernel", True, kernel.kernel_release()))
    checks.append(_sockmap_fixes())
    if is_root:
        for p in kernel.probe_features():
            checks.append(Check(p.name, p.ok, p.detail, "" if p.ok else f"needs {p.fix}"))
    else:
        for feature in kernel.FEATURES:
            checks.append(Check(feature.name, False, "not probed: needs root", "run as root"))
    checks += [_cgroup2(), _bpffs(), _headers(), _bcc()]
    return checks


def as_json(checks: list[Check]) -> dict:
    return {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}
