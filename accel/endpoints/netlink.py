"""Addresses of every network namespace on this node, kept current through
rtnetlink: one netlink socket per namespace, subscribed to address events.

The controller's cost follows events, not the node's size:
- one raw rtnetlink socket per namespace (one descriptor, made inside the
  namespace with setns from this thread: no helper process, no event loop
  per namespace), all of them on one epoll;
- an address event in a namespace re-dumps that namespace's addresses (one
  small dump; it cannot drift if an event was lost), once per burst of
  events: an event that lands during the dump makes one more dump after it;
  a lost event (ENOBUFS) does too;
- new namespaces come from inotify on /run/netns (ip netns, CNI), the moment
  they are mounted there; namespaces only a process holds (containers that
  do not name theirs) from the periodic scan of /proc, which looks only at
  processes started since the last round (one directory listing); every
  tenth round is a full scan (every /run/netns entry and every process),
  which also drops namespaces that are gone. Those scans, and a re-dump of
  one watched namespace per round in turn, are the correctness backstop:
  per second one listing of /proc and one dump, and every 10 s one stat per
  namespace and per process (4 ms at 1,000 namespaces, measured).

pyroute2 supplies the rtnetlink message formats (encoding the dump request,
parsing replies and events); the sockets are our own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import time
from collections.abc import Iterator
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_MULTI, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from .. import libc
from ..netns import HOST_PATHS, NETNS_RUN_DIRS, NamespaceId, entered, namespace_paths

NLMSG_ERROR = 2
NLMSG_DONE = 3
NSFS_MAGIC = 0x6E736673
RCVBUF = 1 << 20  # room for a burst of address events before ENOBUFS
DUMP_TIMEOUT = 2.0  # seconds to wait for the first dump of a new namespace
FULL_SCAN_ROUNDS = 10  # a full namespace scan every 10th backstop round (10 s by default)
SETTLE = 2.0  # seconds a name that appeared in /run/netns may take to be mounted


class _Namespace:
    """One namespace's rtnetlink socket and the addresses it last reported."""

    def __init__(self, ns: NamespaceId, path: str) -> None:
        self.ns = ns
        self.path = path
        with entered(None if path in HOST_PATHS else path):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE (root), else the default
            self.sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        except OSError:
            self.sock.close()
            raise
        self.addrs: set[str] = set()
        self._marshal = MarshalRtnl()
        self._seq = 0
        self._pending: set[str] | None = None  # a dump's addresses, while it runs
        self._again = False  # an event came during the dump: dump once more after it

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def dumping(self) -> bool:
        return self._pending is not None

    def request_dump(self) -> None:
        if self._pending is not None:
            self._again = True
            return
        self._seq += 1
        msg = ifaddrmsg()
        msg["header"]["type"] = RTM_GETADDR
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        msg["header"]["sequence_number"] = self._seq
        msg["family"] = socket.AF_UNSPEC
        msg.encode()
        self._pending = set()
        self.sock.send(msg.data)

    def on_readable(self) -> bool:
        """Read what is queued; True when the address set changed."""
        changed = False
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return changed
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # events were lost: the next dump has the truth
                    self._pending = None
                    self.request_dump()
                    continue
                raise
            for msg in self._marshal.parse(data):
                changed = self._on_message(msg) or changed

    def _on_message(self, msg: Any) -> bool:
        header = msg["header"]
        kind, seq = header["type"], header["sequence_number"]
        ours = self._pending is not None and seq == self._seq
        if kind in (RTM_NEWADDR, RTM_DELADDR):
            if ours and header["flags"] & NLM_F_MULTI:
                addr = msg.get_attr("IFA_ADDRESS")
                if addr:
                    assert self._pending is not None
                    self._pending.add(str(addr))
            else:  # an event: the addresses changed; dump (again) to know how
                self.request_dump()
            return False
        if kind == NLMSG_DONE and ours:
            assert self._pending is not None
            changed, self.addrs, self._pending = self._pending != self.addrs, self._pending, None
            if self._again:
                self._again = False
                self.request_dump()
            return changed
        if kind == NLMSG_ERROR and ours:  # the dump failed (e.g. interrupted): once more
            self._pending = None
            self.request_dump()
        return False

    def dump_now(self, timeout: float = DUMP_TIMEOUT) -> None:
        """Dump and wait for the result (a new namespace: before its
        addresses count)."""
        self.request_dump()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while self.dumping and time.monotonic() < deadline:
                if sel.select(max(0.0, deadline - time.monotonic())):
                    self.on_readable()
        if self.dumping:
            raise OSError(errno.ETIMEDOUT, f"address dump of {self.path} did not finish")

    def close(self) -> None:
        self.sock.close()


def _is_netns(path: str) -> bool:
    """Whether a /run/netns entry already has its namespace mounted (ip netns
    creates the file first, then mounts the namespace on it)."""
    try:
        return libc.statfs_type(path) == NSFS_MAGIC
    except OSError:
        return False


class NetlinkEndpoints:
    """Current addresses per namespace; ``poll()`` reports when they changed."""

    def __init__(self, log: Any, all_namespaces: bool = True) -> None:
        self.log = log
        self.all_namespaces = all_namespaces
        self._watched: dict[NamespaceId, _Namespace] = {}
        self._sel = selectors.DefaultSelector()  # epoll: no limit on descriptor numbers
        self._extra: set[int] = set()
        self._turn = 0  # round-robin index of the backstop re-dump
        self._round = 0  # backstop rounds so far (every FULL_SCAN_ROUNDS-th is a full scan)
        self._pids: set[str] = set()  # processes the last round saw
        self._settling: dict[str, float] = {}  # /run/netns names not mounted yet, since when
        self._inotify: int | None = None
        if all_namespaces:
            self._watch_run_dirs()

    def _watch_run_dirs(self) -> None:
        try:
            fd = libc.inotify_init()
        except OSError as exc:
            self.log.warning("no inotify: new namespaces are found by the periodic scan only", error=exc.strerror)
            return
        self._dirs: dict[int, str] = {}
        for run_dir in NETNS_RUN_DIRS:
            with contextlib.suppress(OSError):
                real = os.path.realpath(run_dir)
                if real not in self._dirs.values():
                    wd = libc.inotify_watch(fd, real, libc.IN_CREATE | libc.IN_DELETE | libc.IN_MOVED_TO | libc.IN_MOVED_FROM | libc.IN_ONLYDIR)
                    self._dirs[wd] = real
        self._inotify = fd
        self._sel.register(fd, selectors.EVENT_READ, "inotify")

    # --- what the agent reads -----------------------------------------------------

    def addresses(self) -> dict[NamespaceId, set[str]]:
        return {ns: set(w.addrs) for ns, w in self._watched.items()}

    def namespaces(self) -> Iterator[tuple[NamespaceId, str]]:
        for ns, w in self._watched.items():
            yield ns, w.path

    def descriptors(self) -> int:
        """Descriptors held for namespaces (one each)."""
        return len(self._watched)

    # --- finding namespaces ---------------------------------------------------------

    def _watch(self, ns: NamespaceId, path: str) -> bool:
        try:
            w = _Namespace(ns, path)
        except OSError as exc:  # a namespace can vanish while we open it
            self.log.debug("namespace not watched", path=path, error=exc.strerror)
            return False
        try:
            w.dump_now()
        except OSError as exc:
            self.log.debug("namespace not watched", path=path, error=exc.strerror)
            w.close()
            return False
        self._watched[ns] = w
        self._sel.register(w.sock, selectors.EVENT_READ, w)
        self.log.info("namespace watched", path=path, addresses=len(w.addrs))
        return True

    def _drop(self, ns: NamespaceId) -> None:
        w = self._watched.pop(ns, None)
        if w is None:  # already dropped (an inotify event and its socket's error in one wait)
            return
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(w.sock)
        w.close()
        self.log.info("namespace gone", netns=f"{ns[0]}:{ns[1]}", path=w.path)

    def rescan(self) -> bool:
        """The backstop: pick up namespaces no event announced, drop gone
        ones, and re-dump one watched namespace in turn. True if anything
        changed.

        Most rounds only look at processes that started since the last one
        (a namespace only a process holds has no event); every
        FULL_SCAN_ROUNDS-th round, or every round without inotify, looks at
        every /run/netns entry and every process, and drops what is gone."""
        self._round += 1
        full = self._inotify is None or self._round % FULL_SCAN_ROUNDS == 1
        if full:  # every process counts as new: stat them all
            self._pids = set()
            current = namespace_paths(self.all_namespaces, pids_seen=self._pids)
        else:
            current = namespace_paths(self.all_namespaces, named=False, pids_seen=self._pids)
        changed = False
        for ns in list(self._watched) if full else []:
            if ns not in current:
                self._drop(ns)
                changed = True
        for ns, path in current.items():
            if ns not in self._watched:
                changed = self._watch(ns, path) or changed
        if self._watched:
            ids = list(self._watched)
            w = self._watched[ids[self._turn % len(ids)]]
            self._turn += 1
            with contextlib.suppress(OSError):
                w.request_dump()
        return changed

    def _on_inotify(self) -> bool:
        assert self._inotify is not None
        changed = False
        with contextlib.suppress(BlockingIOError):
            data = os.read(self._inotify, 1 << 16)
            for wd, mask, name in libc.inotify_events(data):
                path = os.path.join(self._dirs.get(wd, NETNS_RUN_DIRS[0]), name)
                if mask & (libc.IN_DELETE | libc.IN_MOVED_FROM):
                    self._settling.pop(path, None)
                    for ns, w in list(self._watched.items()):
                        if w.path == path:
                            self._drop(ns)
                            changed = True
                else:
                    self._settling[path] = time.monotonic()
        return self._settle() or changed

    def _settle(self) -> bool:
        """Watch the /run/netns entries that are mounted by now."""
        changed = False
        for path, since in list(self._settling.items()):
            if _is_netns(path):
                del self._settling[path]
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                ns = (st.st_dev, st.st_ino)
                if ns not in self._watched:
                    changed = self._watch(ns, path) or changed
            elif time.monotonic() - since > SETTLE:
                del self._settling[path]  # the periodic scan will find it, if it ever is one
        return changed

    # --- the wait ---------------------------------------------------------------------

    def poll(self, timeout: float, extra_fds: list[int] | None = None) -> tuple[bool, list[int]]:
        """Wait up to ``timeout`` for address events, new namespaces or the
        ``extra_fds``. Returns (changed, ready extra fds)."""
        for fd in extra_fds or []:
            if fd not in self._extra:
                self._sel.register(fd, selectors.EVENT_READ, "extra")
                self._extra.add(fd)
        if self._settling:  # a name in /run/netns waits for its mount: look again soon
            timeout = min(timeout, 0.02)
        changed, woken = False, []
        for key, _mask in self._sel.select(timeout):
            if key.data == "extra":
                woken.append(key.fd)
            elif key.data == "inotify":
                changed = self._on_inotify() or changed
            else:
                w: _Namespace = key.data
                if self._watched.get(w.ns) is not w:
                    continue  # dropped earlier in this batch (its /run/netns entry went): its socket is closed
                try:
                    changed = w.on_readable() or changed
                except OSError as exc:
                    self.log.debug("namespace socket failed", path=w.path, error=exc.strerror)
                    self._drop(w.ns)
                    changed = True
        if self._settling:
            changed = self._settle() or changed
        return changed, woken

    def close(self) -> None:
        for ns in list(self._watched):
            w = self._watched.pop(ns)
            w.close()
        if self._inotify is not None:
            os.close(self._inotify)
            self._inotify = None
        self._sel.close()
