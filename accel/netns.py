"""Network namespaces, in one place: finding them (/run/netns, /proc/*/ns/net),
entering one from a thread (plain setns(2): no fork, never creates a
namespace, only the calling thread moves), and their cookies.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator

from . import libc

NETNS_RUN_DIRS = ("/run/netns", "/var/run/netns")
NamespaceId = tuple[int, int]  # (st_dev, st_ino) of the netns file
HOST_PATHS = ("/proc/self/ns/net", "/proc/1/ns/net")


def run_dirs() -> list[str]:
    """The ip-netns directories, each once (/var/run is a link to /run on
    most systems: listing both would stat every namespace twice)."""
    seen: dict[str, str] = {}
    for d in NETNS_RUN_DIRS:
        seen.setdefault(os.path.realpath(d), d)
    return list(seen.values())


def namespace_paths(all_namespaces: bool = True, *, named: bool = True, pids_seen: set[str] | None = None) -> dict[NamespaceId, str]:
    """Every distinct network namespace we can open, by (dev, inode); only
    the host's when ``all_namespaces`` is False (Kubernetes mode, where pod
    IPs come from the API). ``named`` False leaves out /run/netns (watched
    by inotify); with ``pids_seen`` only processes not in it are looked at,
    and it becomes the set of processes running now: a scan for what is new,
    which costs one directory listing however many namespaces there are."""
    found: dict[NamespaceId, str] = {}

    def add(path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        found.setdefault((st.st_dev, st.st_ino), path)

    add("/proc/1/ns/net")
    add("/proc/self/ns/net")
    if not all_namespaces:
        return found
    for run_dir in run_dirs() if named else []:
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(run_dir)):
                add(os.path.join(run_dir, name))
    try:
        pids = {p for p in os.listdir("/proc") if p.isdigit()}
    except OSError:
        return found
    for pid in pids if pids_seen is None else pids - pids_seen:
        add(f"/proc/{pid}/ns/net")
    if pids_seen is not None:
        pids_seen.clear()
        pids_seen.update(pids)
    return found


def ns_path(ns: str) -> str:
    """A namespace's path: ``ns`` itself, or the ip-netns name under /run/netns."""
    return ns if ns.startswith("/") else os.path.join(NETNS_RUN_DIRS[0], ns)


@contextlib.contextmanager
def entered(ns: str | None) -> Iterator[None]:
    """The calling thread (only) in namespace ``ns`` (a name or a path) for
    the body, then back; None: stay. Sockets made inside stay in ``ns``."""
    if ns is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(ns_path(ns), os.O_RDONLY)
        try:
            libc.setns(target, libc.CLONE_NEWNET, ns)
        finally:
            os.close(target)
        try:
            yield
        finally:
            libc.setns(home, libc.CLONE_NEWNET, "back to the caller's namespace")
    finally:
        os.close(home)


def socket_in(ns: str | None, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket of namespace ``ns``."""
    with entered(ns):
        return socket.socket(family, socket.SOCK_STREAM)


SO_NETNS_COOKIE = 71  # getsockopt, Linux >= 5.14
INET_DIAG_SKMEMINFO = 7
TCP_ESTABLISHED = 1


def netns_cookie(sock: socket.socket) -> int:
    """The cookie of the network namespace ``sock`` lives in (the value the
    BPF programs put in loopback keys)."""
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")


def _unmapped(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


def cookie_paths() -> dict[int, str]:
    """netns cookie -> a path that opens the namespace, for every namespace."""
    out: dict[int, str] = {}
    for _ns, path in namespace_paths().items():
        try:
            with entered(None if path in HOST_PATHS else path), socket.socket() as sock:
                cookie = netns_cookie(sock)
        except OSError:
            continue
        out.setdefault(cookie, path)
    return out


def cookie_names() -> dict[int, str]:
    """netns cookie -> a readable name (the ip-netns name, or the path), so
    that `accel conns` can say which namespace a loopback connection is in."""
    names: dict[int, str] = {}
    for cookie, path in cookie_paths().items():
        label = "host" if path in HOST_PATHS else path
        if path.startswith(NETNS_RUN_DIRS):
            label = os.path.basename(path)
        names[cookie] = label
    return names
