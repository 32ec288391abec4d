"""Traffic for the torture suite: echo connections whose every byte is checked.

A client sends a record stream (see records.py) in writes of random size,
then half-closes; the server checks what it gets and echoes it back verbatim;
the client checks the echo and reads it to the end. So each connection checks
both directions and the half-close path.

Two drivers share that protocol: ``EventLoop`` (non-blocking sockets on one
epoll, thousands of connections, churn) and ``run_blocking`` (a thread per
end, blocking calls). Both run inside this process, which the caller has
placed in the accelerated cgroup.
"""

from __future__ import annotations

import contextlib
import errno
import random
import resource
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from accel.netns import socket_in

from .records import Checker, Stream, Tally

ECHO_BACKLOG = 4 << 20  # a server stops reading while this much echo is unsent
IDLE_STALL_S = 20.0  # a connection with no byte moved for this long is stalled


def io_size(rng: random.Random, top_bits: int = 20) -> int:
    """Log-uniform 1 B .. 1 MiB: most calls small, some huge."""
    return max(1, int(2 ** rng.uniform(0, top_bits)))


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass
class Job:
    """One connection to make: where from, where to, how much."""

    client_ns: str | None
    target: Listener
    nbytes: int
    addr: str = ""  # default: the listener's address (set another for v4-mapped)
    bind: tuple[str, int] | None = None
    abort_at: int | None = None  # RST after this many bytes sent (SO_LINGER 0)
    hold_s: float = 0.0  # keep the fd open this long after EOF (the connection sits in TIME_WAIT)

    @property
    def dest(self) -> tuple[str, int]:
        return (self.addr or self.target.addr, self.target.port)


@dataclass
class Result:
    connections: int = 0
    completed: int = 0
    aborted: int = 0
    stalled: int = 0
    bytes_sent: int = 0
    errors: list[str] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)

    def merge(self, other: Result) -> None:
        self.connections += other.connections
        self.completed += other.completed
        self.aborted += other.aborted
        self.stalled += other.stalled
        self.bytes_sent += other.bytes_sent
        self.errors += other.errors
        self.tally.add(other.tally)

    def add_checked(self, checker: Checker, expected: int, aborted: bool, who: str) -> None:
        tally = checker.finish(expected, aborted=aborted)
        self.tally.add(tally)
        if tally.faults:
            self.errors.append(f"{who}: {checker.first_fault or 'bytes missing'} ({tally.as_dict()})")

    @property
    def faults(self) -> int:
        return self.tally.faults + self.stalled + len(self.errors)


class Listener:
    """A listening socket in a namespace; knows which connection ids may reach it."""

    def __init__(self, ns: str | None, addr: str, port: int = 0, dual_stack: bool = False) -> None:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.sock = socket_in(ns, family)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        self.sock.bind((addr, port))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.ns, self.addr, self.port = ns, addr, self.sock.getsockname()[1]
        self.allowed: set[int] = set()

    def close(self) -> None:
        self.sock.close()


_ids = iter(range(1, 1 << 62))
_ids_lock = threading.Lock()


def next_id() -> int:
    with _ids_lock:
        return next(_ids) * 7919 + random.getrandbits(12)


def _linger_zero(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _End:
    """One socket in the event loop."""

    def __init__(self, loop: EventLoop, sock: socket.socket) -> None:
        self.loop, self.sock = loop, sock
        self.events = 0
        self.closed = False
        self.last_io = time.monotonic()  # progress marker for stall detection

    def want(self) -> int:
        raise NotImplementedError

    def on_event(self, mask: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(KeyError, ValueError):
                self.loop.sel.unregister(self.sock)
            self.sock.close()


class _Server(_End):
    def __init__(self, loop: EventLoop, sock: socket.socket, listener: Listener) -> None:
        super().__init__(loop, sock)
        self.checker = Checker(None, allowed=listener.allowed)
        self.echo = bytearray()
        self.peer_done = False

    def want(self) -> int:
        ev = 0
        if not self.peer_done and len(self.echo) < ECHO_BACKLOG:
            ev |= selectors.EVENT_READ
        if self.echo:
            ev |= selectors.EVENT_WRITE
        return ev

    def on_event(self, mask: int) -> None:
        rng = self.loop.rng
        try:
            if mask & selectors.EVENT_READ:
                data = self.sock.recv(io_size(rng))
                if data:
                    self.checker.feed(data)
                    self.echo += data
                else:
                    self.peer_done = True
            if mask & selectors.EVENT_WRITE and self.echo:
                n = self.sock.send(memoryview(self.echo)[: io_size(rng)])
                del self.echo[:n]
        except (BlockingIOError, InterruptedError):
            return
        except (ConnectionResetError, BrokenPipeError):
            self._finish(aborted=True)
            return
        if self.peer_done and not self.echo:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            self._finish(aborted=False)

    def _finish(self, aborted: bool) -> None:
        # Loss is judged by the client, which knows how much it sent.
        self.loop.result.add_checked(self.checker, 0, aborted=True, who=f"server{' (reset)' if aborted else ''}")
        self.close()


class _Client(_End):
    def __init__(self, loop: EventLoop, sock: socket.socket, job: Job, conn_id: int) -> None:
        super().__init__(loop, sock)
        self.job = job
        self.conn_id = conn_id
        self.stream = Stream(conn_id, job.nbytes, seed=conn_id)
        self.checker = Checker(conn_id)
        self.connected = False
        self.wr_closed = False
        self.held = False  # finished, fd kept open (EventLoop.hold)

    def want(self) -> int:
        if self.held:
            return 0
        ev = selectors.EVENT_READ if self.connected else 0
        if not self.wr_closed:
            ev |= selectors.EVENT_WRITE
        return ev

    def on_event(self, mask: int) -> None:
        rng = self.loop.rng
        try:
            if not self.connected:
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._fail(f"connect to {self.job.dest}: {errno.errorcode.get(err, err)}")
                    return
                self.connected = True
            if mask & selectors.EVENT_WRITE and not self.wr_closed:
                # Written the moment connect() completes: the early-data path.
                data = self.stream.peek(io_size(rng))
                if data:
                    n = self.sock.send(data)
                    self.stream.consume(n)
                if self.job.abort_at is not None and self.stream.produced >= self.job.abort_at:
                    self._abort()
                    return
                if self.stream.done:
                    self.sock.shutdown(socket.SHUT_WR)
                    self.wr_closed = True
            if mask & selectors.EVENT_READ:
                data = self.sock.recv(io_size(rng))
                if data:
                    self.checker.feed(data)
                elif self.wr_closed:
                    self._done()
                else:
                    self._fail("server closed before the client finished sending")
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(f"{exc!r}")

    def _abort(self) -> None:
        _linger_zero(self.sock)
        self.loop.result.aborted += 1
        self.loop.result.bytes_sent += self.stream.produced
        self.loop.result.add_checked(self.checker, 0, aborted=True, who="client (reset)")
        self.close()

    def _done(self) -> None:
        self.loop.result.completed += 1
        self.loop.result.bytes_sent += self.stream.produced
        self.loop.result.add_checked(self.checker, self.stream.produced, aborted=False, who="client")
        if self.job.hold_s:
            self.loop.hold(self, self.job.hold_s)
        else:
            self.close()

    def _fail(self, why: str) -> None:
        self.loop.result.errors.append(f"conn {self.conn_id}: {why}")
        self.loop.result.bytes_sent += self.stream.produced
        self.close()


class EventLoop:
    """Non-blocking echo connections on one epoll instance."""

    def __init__(self, listeners: Iterable[Listener], seed: int = 1) -> None:
        self.sel = selectors.DefaultSelector()
        self.rng = random.Random(seed)
        self.result = Result()
        self.ends: set[_End] = set()
        self.held: list[tuple[float, _Client]] = []  # finished clients whose fd stays open
        self.reused_while_held = 0  # new connections that took a held client's tuple
        self.by_port: dict[tuple[str, int], Listener] = {}
        for lst in listeners:
            self.sel.register(lst.sock, selectors.EVENT_READ, lst)

    def start(self, job: Job) -> None:
        conn_id = next_id()
        job.target.allowed.add(conn_id)
        sock = socket_in(job.client_ns, socket.AF_INET6 if ":" in job.dest[0] else socket.AF_INET)
        sock.setblocking(False)
        if job.bind:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(job.bind)
        self.result.connections += 1
        client = _Client(self, sock, job, conn_id)
        err = sock.connect_ex(job.dest)
        if err not in (0, errno.EINPROGRESS):
            client._fail(f"connect: {errno.errorcode.get(err, err)}")
            return
        if self.held:
            mine = sock.getsockname()[:2]
            self.reused_while_held += any(c.sock.getsockname()[:2] == mine and c.job.dest == job.dest for _, c in self.held)
        self.ends.add(client)
        self._sync(client)

    def _sync(self, end: _End) -> None:
        if end.closed:
            self.ends.discard(end)
            return
        ev = end.want()
        if ev == end.events:
            return
        if end.events == 0:
            self.sel.register(end.sock, ev, end)
        elif ev == 0:
            self.sel.unregister(end.sock)
        else:
            self.sel.modify(end.sock, ev, end)
        end.events = ev

    def hold(self, client: _Client, seconds: float) -> None:
        """Keep a finished client's fd open (its connection ended: TIME_WAIT)
        while new connections may reuse its tuple; it reads nothing more."""
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(client.sock)
        client.events = 0
        client.held = True
        self.ends.discard(client)
        self.held.append((time.monotonic() + seconds, client))

    def _release_held(self, now: float | None = None) -> None:
        """Close held clients (all, or those due). A connection that ended has
        nothing left to read but EOF: any byte found is another connection's."""
        keep = []
        for due, client in self.held:
            if now is not None and due > now:
                keep.append((due, client))
                continue
            try:
                client.sock.setblocking(False)
                stray = client.sock.recv(1 << 20)
            except OSError:
                stray = b""
            if stray:
                self.result.tally.misdelivered += len(stray)
                self.result.errors.append(f"conn {client.conn_id}: {len(stray)} bytes arrived after its own EOF (another connection's)")
            client.close()
        self.held = keep

    def _accept(self, lst: Listener) -> None:
        for _ in range(64):
            try:
                sock, _ = lst.sock.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            end = _Server(self, sock, lst)
            self.ends.add(end)
            self._sync(end)

    def run(self, jobs: Iterator[Job], concurrency: int, deadline: float, progress: Callable[[Result], None] | None = None) -> Result:
        pending = True
        clients = lambda: sum(1 for e in self.ends if isinstance(e, _Client))  # noqa: E731
        while True:
            while pending and clients() < concurrency:
                job = next(jobs, None)
                if job is None:
                    pending = False
                    break
                self.start(job)
            if self.held:
                self._release_held(time.monotonic())
            if not pending and not self.ends:
                break
            if time.monotonic() > deadline:
                self._give_up()
                break
            now = time.monotonic()
            for key, mask in self.sel.select(0.2):
                obj = key.data
                if isinstance(obj, Listener):
                    self._accept(obj)
                else:
                    obj.last_io = now
                    obj.on_event(mask)
                    self._sync(obj)
            # A stall is a connection on which nothing moves (both ends idle),
            # not one that is merely slow: judge by progress, not by the clock.
            idle = [e for e in self.ends if isinstance(e, _Client) and now - e.last_io > IDLE_STALL_S]
            if idle:
                self._give_up(idle)
            if progress:
                progress(self.result)
        return self.result

    def _give_up(self, ends: Sequence[_End] | None = None) -> None:
        for end in list(self.ends) if ends is None else ends:
            self.ends.discard(end)
            if isinstance(end, _Client):
                self.result.stalled += 1
                self.result.errors.append(f"conn {end.conn_id}: stalled after {end.stream.produced} bytes sent, {end.checker.received} echoed")
            end.close()

    def close(self) -> None:
        self._release_held()
        for end in list(self.ends):
            end.close()
        self.sel.close()


def run_blocking(jobs: list[Job], seed: int, timeout: float) -> Result:
    """A thread per end, blocking calls with random sizes; one fresh listener
    per job (its accept blocks)."""
    result = Result()
    lock = threading.Lock()

    def server(lst: Listener) -> None:
        lst.sock.setblocking(True)
        lst.sock.settimeout(timeout)
        try:
            sock, _ = lst.sock.accept()
        except OSError as exc:
            with lock:
                result.errors.append(f"accept: {exc!r}")
            return
        rng = random.Random(seed ^ lst.port)
        checker = Checker(None, allowed=lst.allowed)
        sock.settimeout(timeout)
        try:
            while data := sock.recv(io_size(rng)):
                checker.feed(data)
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            with lock:
                result.errors.append(f"server: {exc!r}")
        finally:
            sock.close()
            with lock:
                result.add_checked(checker, 0, aborted=True, who="blocking server")

    def client(job: Job) -> None:
        conn_id = next_id()
        job.target.allowed.add(conn_id)
        rng = random.Random(conn_id)
        sock = socket_in(job.client_ns, socket.AF_INET6 if ":" in job.dest[0] else socket.AF_INET)
        sock.settimeout(timeout)
        stream = Stream(conn_id, job.nbytes, seed=conn_id)
        checker = Checker(conn_id)

        def reader() -> None:
            try:
                while data := sock.recv(io_size(rng)):
                    checker.feed(data)
            except OSError as exc:
                with lock:
                    result.errors.append(f"client read: {exc!r}")

        try:
            sock.connect(job.dest)
            t = threading.Thread(target=reader)
            t.start()
            wrng = random.Random(conn_id + 1)
            while not stream.done:
                sock.sendall(stream.take(io_size(wrng)))
            sock.shutdown(socket.SHUT_WR)
            t.join(timeout)
            stalled = t.is_alive()
        except OSError as exc:
            with lock:
                result.errors.append(f"client: {exc!r}")
            stalled = False
        finally:
            sock.close()
        with lock:
            result.connections += 1
            result.bytes_sent += stream.produced
            if stalled:
                result.stalled += 1
            else:
                result.completed += 1
            result.add_checked(checker, stream.produced, aborted=False, who="blocking client")

    threads = []
    for job in jobs:
        threads.append(threading.Thread(target=server, args=(job.target,)))
        threads.append(threading.Thread(target=client, args=(job,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * 2)
    return result
