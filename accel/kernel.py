"""What the running kernel and this machine offer: feature probes, cgroup v2
and bpffs discovery (and mounting), kernel headers for bcc.

Features are probed by loading tiny programs (libbpf's probes), never guessed
from version numbers: distributions backport, and a kernel can be built
without BPF_STREAM_PARSER.
"""

from __future__ import annotations

import errno
import glob
import os
import platform
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from . import libbpf, libc
from .abi import FUNC_GET_NETNS_COOKIE, MAP_TYPE_RINGBUF, MAP_TYPE_SK_STORAGE, MAP_TYPE_SOCKHASH, PROG_TYPE_SK_MSG, PROG_TYPE_SOCK_OPS
from .errors import BpffsError, CgroupError, HeadersError, KernelError, NotRootError

CGROUP2_SUPER_MAGIC = 0x63677270
BPF_FS_MAGIC = 0xCAFE4A11
DEFAULT_BPFFS = "/sys/fs/bpf"
FALLBACK_CGROUP2 = "/run/accel/cgroup2"
HEADERS_CACHE = "/var/cache/accel/kernel-headers"


def kernel_release() -> str:
    return platform.release()


# --- known kernel bugs ----------------------------------------------------

# Upstream stable releases that carry the sockmap data-loss and duplication
# fixes (../shared/KERNEL-NOTES.md): the first fixed patch level per line.
# Lines from 6.16 have them; every other line before 6.16 (6.8, 6.11, 6.13,
# 6.14 among them) reached end of life without them.
SOCKMAP_FIXED_IN = {(5, 15): 186, (6, 1): 142, (6, 6): 94, (6, 12): 34, (6, 15): 3}
SOCKMAP_FIXED_LINE = (6, 16)


def upstream_version(release: str | None = None, version: str | None = None, signature: str | None = None) -> tuple[int, int, int] | None:
    """The upstream version this kernel is built from, or None when it cannot
    be told. Distributions hide it: Debian's release is x.y.0-ABI-flavour
    (the real version is in `uname -v`), Ubuntu's is x.y.0-ABI-flavour too
    (the real one ends /proc/version_signature)."""
    release = platform.release() if release is None else release
    version = platform.version() if version is None else version
    if signature is None:
        try:
            with open("/proc/version_signature") as f:
                signature = f.read()
        except OSError:
            signature = ""
    for pattern, text in ((r"(\d+)\.(\d+)\.(\d+)\s*$", signature), (r"Debian (\d+)\.(\d+)\.(\d+)", version)):
        m = re.search(pattern, text.strip())
        if m:
            return int(m[1]), int(m[2]), int(m[3])
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?(.*)", release)
    if not m:
        return None
    patch = int(m[3] or 0)
    if patch == 0 and m[4].startswith("-"):
        return None  # x.y.0-N-flavour: a distribution's ABI number, not the patch level
    return int(m[1]), int(m[2]), patch


def sockmap_fixes(version: tuple[int, int, int] | None) -> tuple[bool | None, str]:
    """Whether a kernel of ``version`` carries the upstream sockmap data-loss
    fixes: True, False, or None (unknown), with a sentence saying why."""
    advice = "use 5.15.186+, 6.1.142+, 6.6.94+, 6.12.34+, 6.15.3+ or 6.16+ (a distribution kernel may have backported them: check its changelog)"
    if version is None:
        return None, f"the upstream version of this distribution kernel is unknown; {advice}"
    line, patch = version[:2], version[2]
    text = ".".join(map(str, version))
    if line >= SOCKMAP_FIXED_LINE:
        return True, f"{text}: the {line[0]}.{line[1]} line has them"
    if line in SOCKMAP_FIXED_IN:
        need = SOCKMAP_FIXED_IN[line]
        if patch >= need:
            return True, f"{text} >= {line[0]}.{line[1]}.{need}"
        return False, f"{text}: they reached this line in {line[0]}.{line[1]}.{need}; {advice}"
    return False, f"{text}: the {line[0]}.{line[1]} line never received them; {advice}"


CAP_SYS_ADMIN = 21


def has_admin_caps() -> bool:
    """CAP_SYS_ADMIN in the effective set: uid 0 alone is not enough (a
    container may run as root with its capabilities dropped)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << CAP_SYS_ADMIN))
    except OSError:
        pass
    return os.geteuid() == 0


def require_root(step: str) -> None:
    if os.geteuid() != 0 or not has_admin_caps():
        raise NotRootError(f"{step}: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)", fix="run it as root (or with sudo)")


def fs_magic(path: str) -> int:
    """f_type of the filesystem holding ``path``."""
    return libc.statfs_type(path)


def _mount(source: str, target: str, fstype: str) -> None:
    libc.mount(source, target, fstype)


def mounts(fstype: str) -> list[str]:
    """Mount points of a filesystem type, from /proc/self/mountinfo."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == fstype:
                points.append(left.split(" ")[4].replace("\\040", " "))
    return points


# --- cgroup v2 -------------------------------------------------------------


def cgroup2_root(mount_if_missing: bool = False) -> str:
    """The cgroup-v2 mount point: the unified hierarchy on a pure v2 system,
    /sys/fs/cgroup/unified on a hybrid one; mounted by us when absent."""
    found = mounts("cgroup2")
    if found:
        # Prefer the conventional locations when several exist.
        for preferred in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
            if preferred in found:
                return preferred
        return found[0]
    if not mount_if_missing:
        raise CgroupError(
            "find cgroup v2: no cgroup2 filesystem is mounted",
            fix="mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or run `accel run`, which mounts it",
        )
    os.makedirs(FALLBACK_CGROUP2, exist_ok=True)
    try:
        _mount("none", FALLBACK_CGROUP2, "cgroup2")
    except OSError as exc:
        raise CgroupError(f"mount cgroup v2 at {FALLBACK_CGROUP2}: {exc.strerror}", fix="the kernel needs CONFIG_CGROUPS and cgroup2 support") from exc
    return FALLBACK_CGROUP2


def resolve_cgroup(path: str | None, mount_if_missing: bool = False) -> str:
    """Validate a --cgroup argument (or pick the v2 root when None)."""
    if path is None:
        return cgroup2_root(mount_if_missing)
    if not os.path.exists(path):
        raise CgroupError(f"cgroup {path}: does not exist", fix=f"create it (mkdir) under the cgroup-v2 mount ({_v2_hint()})")
    if not os.path.isdir(path):
        raise CgroupError(f"cgroup {path}: is not a directory", fix=f"pass a cgroup-v2 directory ({_v2_hint()})")
    try:
        magic = fs_magic(path)
    except OSError as exc:
        raise CgroupError(f"cgroup {path}: {exc.strerror}") from exc
    if magic != CGROUP2_SUPER_MAGIC:
        raise CgroupError(f"cgroup {path}: is not on a cgroup-v2 filesystem", fix=f"pass a directory under {_v2_hint()}")
    return os.path.realpath(path)


def _v2_hint() -> str:
    found = mounts("cgroup2")
    return found[0] if found else "a cgroup2 mount"


# --- bpffs -----------------------------------------------------------------


def ensure_bpffs(pin_dir: str, mount_if_missing: bool = True) -> None:
    """Make sure ``pin_dir`` can live on bpffs: mount /sys/fs/bpf when it is the
    parent and nothing is mounted there; refuse any other non-bpffs path."""
    parent = os.path.dirname(os.path.normpath(pin_dir))
    existing = pin_dir if os.path.isdir(pin_dir) else parent
    if not os.path.isdir(existing):
        raise BpffsError(
            f"pin directory {pin_dir}: its parent {parent} does not exist", fix=f"use a directory on a bpf filesystem (e.g. under {DEFAULT_BPFFS})"
        )
    if fs_magic(existing) == BPF_FS_MAGIC:
        return
    if mount_if_missing and os.path.normpath(existing) == DEFAULT_BPFFS:
        try:
            _mount("bpf", DEFAULT_BPFFS, "bpf")
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                fix = f"this process may not mount (a container or a seccomp profile): mount it from the host (mount -t bpf bpf {DEFAULT_BPFFS}) and pass it in"
            else:
                fix = "the kernel needs CONFIG_BPF_SYSCALL (bpffs)"
            raise BpffsError(f"mount bpffs at {DEFAULT_BPFFS}: {exc.strerror}", fix=fix) from exc
        return
    raise BpffsError(
        f"pin directory {pin_dir}: {existing} is not on a bpf filesystem", fix=f"use a path under a bpffs mount (mount -t bpf bpf {DEFAULT_BPFFS})"
    )


# --- features --------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    """One kernel feature the datapath needs: how to probe it, and what to do
    when it is missing."""

    name: str
    probe: Callable[[], bool]
    fix: str


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    detail: str
    fix: str


# The running kernel's own struct fields that flow control reads (bpf/maps.h,
# ACCEL_OFF_*): their offsets come from the kernel's BTF, because the headers
# bcc compiles with may be another kernel's.
KERNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "sock": ("sk_user_data", "sk_rcvbuf", "sk_sndbuf"),
    "tcp_sock": ("copied_seq", "write_seq"),
    "sk_psock": ("msg_tot_len",),
}


def kernel_field_offsets() -> dict[str, int]:
    """-D name -> offset for every field in KERNEL_FIELDS, or KernelError
    naming what this kernel's BTF lacks."""
    found = libbpf.kernel_struct_offsets(KERNEL_FIELDS)
    missing = [f"{s}.{m}" for s, ms in KERNEL_FIELDS.items() for m in ms if (s, m) not in found]
    if missing:
        where = "no BTF at /sys/kernel/btf/vmlinux" if not found else f"its BTF has no {', '.join(missing)}"
        raise KernelError(
            f"read the kernel's struct layout for flow control: {where}",
            fix=(
                "run a kernel with CONFIG_DEBUG_INFO_BTF (Debian, Ubuntu, Fedora and RHEL kernels have it)"
                " that has sk_psock.msg_tot_len (6.16+, or a stable kernel with the sockmap FIONREAD fix)"
            ),
        )
    return {f"ACCEL_OFF_{s.upper()}_{m.upper()}": off for (s, m), off in found.items()}


def _kernel_fields_ok() -> bool:
    try:
        kernel_field_offsets()
    except KernelError:
        return False
    return True


# The requirements, in the order they are reported. Each is probed by loading
# a tiny program or creating a tiny map, as libbpf does.
FEATURES: list[Feature] = [
    Feature(
        "BPF syscall",
        lambda: libbpf.probe_syscall() and libbpf.probe_prog_type(PROG_TYPE_SOCK_OPS),
        "a kernel with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF",
    ),
    Feature("sockhash map", lambda: libbpf.probe_map_type(MAP_TYPE_SOCKHASH), "a kernel >= 4.18 with CONFIG_BPF_STREAM_PARSER"),
    Feature("sk_msg program", lambda: libbpf.probe_prog_type(PROG_TYPE_SK_MSG), "a kernel >= 4.17 with CONFIG_BPF_STREAM_PARSER"),
    Feature("sk_storage map", lambda: libbpf.probe_map_type(MAP_TYPE_SK_STORAGE), "a kernel >= 5.2"),
    Feature("ring buffer map (release events)", lambda: libbpf.probe_map_type(MAP_TYPE_RINGBUF), "a kernel >= 5.8"),
    Feature(
        "netns cookie helper (sockops, sk_msg)",
        lambda: libbpf.probe_helper(PROG_TYPE_SOCK_OPS, FUNC_GET_NETNS_COOKIE) and libbpf.probe_helper(PROG_TYPE_SK_MSG, FUNC_GET_NETNS_COOKIE),
        "a kernel >= 5.15 (bpf_get_netns_cookie in sockops and sk_msg)",
    ),
    Feature(
        "kernel BTF for flow control",
        _kernel_fields_ok,
        "a kernel with CONFIG_DEBUG_INFO_BTF whose sk_psock has msg_tot_len (6.16+, or a stable kernel with the sockmap FIONREAD fix)",
    ),
]


def probe_features() -> list[Probe]:
    """Each kernel feature the datapath needs, probed by loading a tiny program."""
    out = []
    for feature in FEATURES:
        fix = feature.fix
        try:
            ok = bool(feature.probe())
            detail = "supported" if ok else "not supported by this kernel"
        except OSError as exc:
            ok, detail = False, f"refused: {exc.strerror}"
            if exc.errno in (errno.EPERM, errno.EACCES):
                fix = PERMISSION_FIX
        out.append(Probe(feature.name, ok, detail, fix))
    return out


PERMISSION_FIX = "real root with CAP_BPF and CAP_SYS_ADMIN (not a user namespace or an unprivileged container)"


def require_features() -> None:
    probes = probe_features()
    denied = [p for p in probes if not p.ok and p.fix == PERMISSION_FIX]
    if denied:
        raise NotRootError(f"probe kernel {kernel_release()}: BPF is not permitted to this process ({denied[0].detail})", fix=f"run as {PERMISSION_FIX}")
    missing = [p for p in probes if not p.ok]
    if missing:
        what = "; ".join(f"{p.name} (needs {p.fix})" for p in missing)
        raise KernelError(f"probe kernel {kernel_release()}: missing {what}", fix="run on such a kernel; `accel doctor` lists every requirement")


# --- node TCP memory ---------------------------------------------------------

PAGE = 4096


def tcp_autotune_max() -> int:
    """tcp_rmem max + tcp_wmem max: the most TCP's buffer autotuning lets a
    connection queue (its receive window plus its send buffer)."""
    return _sysctl_ints("/proc/sys/net/ipv4/tcp_rmem", 6 << 20)[-1] + _sysctl_ints("/proc/sys/net/ipv4/tcp_wmem", 4 << 20)[-1]


def tcp_mem_pages() -> tuple[int, int, int]:
    """net.ipv4.tcp_mem: (low, pressure, high) in pages, for the whole node."""
    low, pressure, high = [*_sysctl_ints("/proc/sys/net/ipv4/tcp_mem", 0), 0, 0, 0][:3]
    return low, pressure, high


def _sysctl_ints(path: str, default: int) -> list[int]:
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return [default]


def tcp_memory_bytes() -> int:
    """Node-wide TCP memory in use (all namespaces share the counter)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1]) * PAGE
    return 0


# --- kernel headers for bcc ------------------------------------------------


@dataclass(frozen=True)
class Headers:
    kind: str  # "env", "running-kernel", "kheaders", "distribution", "none"
    path: str
    note: str


def find_headers(create: bool = True) -> Headers:
    """Where bcc will find kernel headers, preparing a fallback if needed.

    Order: $BCC_KERNEL_SOURCE; /lib/modules/<release>/build; the kernel's own
    /sys/kernel/kheaders.tar.xz; else the distribution's generic headers
    (Debian's linux-headers-<arch>), which suffice because our programs use only
    stable UAPI (struct bpf_sock_ops, struct sk_msg_md) and bcc's own helper
    definitions. Debian splits them into an arch directory and a -common one;
    bcc takes one directory, so we build a merged tree of symlinks.
    """
    release = kernel_release()
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env:
        return Headers("env", env, f"BCC_KERNEL_SOURCE={env}")
    build = f"/lib/modules/{release}/build"
    if os.path.isdir(build):
        return Headers("running-kernel", build, f"headers of the running kernel {release}")
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return Headers("kheaders", "/sys/kernel/kheaders.tar.xz", "the kernel's built-in headers (CONFIG_IKHEADERS)")
    candidates = _distribution_headers()
    if not candidates:
        raise HeadersError(
            f"find kernel headers for bcc: none for {release} and no distribution headers in /usr/src",
            fix="install them (Debian: apt-get install linux-headers-amd64)",
        )
    arch_dir, common_dir = candidates[-1]
    name = os.path.basename(arch_dir)
    merged = os.path.join(HEADERS_CACHE, name)
    if create and not os.path.isdir(os.path.join(merged, "include")):
        # Build aside and rename, so a concurrent or interrupted run never
        # leaves a half-made tree where bcc would look.
        tmp = merged + f".tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _merge_trees(tmp, [arch_dir, common_dir])
        try:
            os.rename(tmp, merged)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return Headers("distribution", merged, f"no headers for running kernel {release}; using the distribution's {name}")


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", os.path.basename(path)))


def _distribution_headers() -> list[tuple[str, str]]:
    pairs = []
    for arch_dir in glob.glob("/usr/src/linux-headers-*"):
        if arch_dir.endswith("-common") or not os.path.isdir(os.path.join(arch_dir, "include", "generated")):
            continue
        base = re.sub(r"-[a-z0-9_]+$", "", os.path.basename(arch_dir))
        common = os.path.join("/usr/src", base + "-common")
        if os.path.isdir(common):
            pairs.append((arch_dir, common))
        elif os.path.isdir(os.path.join(arch_dir, "include", "linux")):
            pairs.append((arch_dir, arch_dir))
    return sorted(pairs, key=lambda p: _version_key(p[0]))


def _merge_trees(dest: str, sources: list[str]) -> None:
    """Symlink farm: entries present in one source link to it; directories
    present in several are merged recursively; files in several take the first."""
    os.makedirs(dest, exist_ok=True)
    entries: dict[str, list[str]] = {}
    for src in dict.fromkeys(sources):
        for name in os.listdir(src):
            entries.setdefault(name, []).append(os.path.join(src, name))
    for name, paths in entries.items():
        target = os.path.join(dest, name)
        dirs = [p for p in paths if os.path.isdir(p)]
        if len(dirs) > 1:
            _merge_trees(target, dirs)
        else:
            os.symlink(os.path.realpath(paths[0]), target)
