"""What an application can observe of a TCP connection, as probes.

Each probe drives one behaviour through real sockets and returns what the
application saw (return values, errors, readiness), never a timing: the
conformance test (`test_conformance.py`) runs every probe twice, on plain
TCP and accelerated, and compares the two. A probe gets a `Net`, which makes
connected pairs of one address family in whichever cgroup the process is in
at that moment, and checks (accelerated) that both ends are in the sockhash,
so that the probe exercises the fast path and not TCP after a fallback.
"""

from __future__ import annotations

import array
import asyncio
import errno
import fcntl
import os
import select
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from accel.netns import socket_in
from accel.selftest import splice_probe

SIOCINQ = 0x541B  # FIONREAD
SIOCOUTQ = 0x5411  # TIOCOUTQ
SIOCATMARK = 0x8905
TCP_CORK = 3
# Long enough for a loopback segment or a redirect to land, short against a
# test's budget; a probe that asks "did it arrive" waits this long.
SETTLE = 0.2
IDLE_LIMIT = 0.5  # "nothing more is accepted": no progress for this long
# How long "held back" is watched: well under TCP_CORK's 200 ms ceiling, after
# which TCP sends a corked segment anyway.
HOLD_CHECK = 0.05


@dataclass
class Net:
    """Pairs of one family in the current cgroup: on loopback in this
    process's namespace, or (``server_addr`` with the namespaces) between
    two pods. ``check`` (accelerated runs) asserts a new pair is in the
    sockhash; ``made`` keeps every socket for closing."""

    family: int
    check: Callable[[socket.socket, socket.socket], None] | None = None
    server_addr: str | None = None
    server_ns: str | None = None
    client_ns: str | None = None
    made: list[socket.socket] = field(default_factory=list)

    @property
    def address(self) -> str:
        if self.server_addr:
            return self.server_addr
        return "::1" if self.family == socket.AF_INET6 else "127.0.0.1"

    def listener(self) -> socket.socket:
        lst = socket_in(self.server_ns, self.family)
        lst.bind((self.address, 0))
        lst.listen(8)
        self.made.append(lst)
        return lst

    def connect(self, lst: socket.socket) -> socket.socket:
        """A client socket connected to ``lst``, blocking, 30 s timeout."""
        client = socket_in(self.client_ns, self.family)
        self.made.append(client)
        client.settimeout(30)
        client.connect(lst.getsockname()[:2])
        return client

    def pair(self) -> tuple[socket.socket, socket.socket]:
        """(client, server), blocking with a 30 s safety timeout unless a
        probe sets its own."""
        lst = self.listener()
        client = self.connect(lst)
        server, _ = lst.accept()
        self.made.append(server)
        server.settimeout(30)
        if self.check:
            self.check(client, server)
        return client, server

    def close(self) -> None:
        for s in self.made:
            s.close()
        self.made.clear()


def _err(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, repr(exc))


def _recv_or_errno(sock: socket.socket, n: int, flags: int = 0) -> bytes | str:
    """What one recv() gives: its bytes, or the errno's name."""
    try:
        return sock.recv(n, flags)
    except OSError as exc:
        return _err(exc)


def _readable(sock: socket.socket, timeout: float = SETTLE) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def _ioctl_int(sock: socket.socket, request: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), request, buf, True)
    return buf[0]


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            break
        got.extend(chunk)
    return bytes(got)


def _fill(sender: socket.socket, piece: int = 64 << 10) -> int:
    """Non-blocking writes until the kernel accepts nothing more: what a
    sender may queue to a receiver that reads nothing. An accelerated sender
    that waits on TCP gets EAGAIN as TCP's does."""
    sender.setblocking(False)
    chunk = b"f" * piece
    total, idle_since = 0, time.monotonic()
    while time.monotonic() - idle_since < IDLE_LIMIT:
        try:
            total += sender.send(chunk)
            idle_since = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
    sender.setblocking(True)
    sender.settimeout(30)
    return total


# --- sending limits and timeouts ---------------------------------------------------


def nonblocking_send_limit(net: Net) -> dict[str, Any]:
    """How much a non-blocking sender may queue to a receiver that reads
    nothing; reported as the bytes themselves (the test compares them within
    a factor) and whether every byte then arrives in order."""
    client, server = net.pair()
    queued = _fill(client)
    got = _recv_exactly(server, queued)
    return {"queued": queued, "all_arrive": got == b"f" * queued}


def blocking_send_times_out(net: Net) -> dict[str, Any]:
    """A blocking send with SO_SNDTIMEO of 16 MiB to a receiver that reads
    nothing: TCP gives up (a short count, or EAGAIN when nothing fitted)."""
    client, _server = net.pair()  # kept open (Net.made), never read
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 300_000))
    data = b"t" * (16 << 20)
    try:
        sent = client.send(data)
        outcome = "short" if sent < len(data) else "complete"
    except OSError as exc:
        outcome = _err(exc)
    return {"outcome": outcome}


def receive_timeout(net: Net) -> dict[str, Any]:
    """SO_RCVTIMEO on a connection with nothing to read: EAGAIN, after
    waiting (not at once)."""
    client, server = net.pair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200_000))
    server.settimeout(None)  # let the socket option rule, as a C program's would
    start = time.monotonic()
    try:
        server.recv(10)
        outcome = "data"
    except OSError as exc:
        outcome = _err(exc)
    waited = time.monotonic() - start >= 0.15
    client.sendall(b"late")
    return {"outcome": outcome, "waited": waited, "then": _recv_exactly(server, 4)}


def peer_closes_midway(net: Net) -> dict[str, Any]:
    """The receiver reads a little of a larger transfer and closes: TCP's
    sender gets an error (ECONNRESET or EPIPE) before it has sent it all."""
    client, server = net.pair()
    done: dict[str, Any] = {}

    def send() -> None:
        try:
            client.sendall(b"p" * (64 << 20))
            done["outcome"] = "all sent"
        except OSError as exc:
            done["outcome"] = "error"
            done["errno"] = _err(exc)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    _recv_exactly(server, 100_000)
    server.close()
    t.join(30)
    return {"outcome": done.get("outcome", "hung")}


# --- shutdown, close, resets -------------------------------------------------------


def shutdown_write(net: Net) -> dict[str, Any]:
    """SHUT_WR: the peer reads every byte, then EOF; the other direction
    still works; the shut side cannot send."""
    client, server = net.pair()
    client.sendall(b"request")
    client.shutdown(socket.SHUT_WR)
    got = _recv_exactly(server, 7)
    eof = server.recv(10)
    server.sendall(b"reply")
    reply = _recv_exactly(client, 5)
    try:
        client.send(b"more")
        after = "sent"
    except OSError as exc:
        after = _err(exc)
    return {"got": got, "eof": eof, "reply": reply, "send_after_shutdown": after}


def shutdown_read(net: Net) -> dict[str, Any]:
    """SHUT_RD: a read returns EOF at once (queued bytes aside), and the shut
    side can still send."""
    client, server = net.pair()
    server.shutdown(socket.SHUT_RD)
    eof = server.recv(10)
    server.sendall(b"still")
    return {"eof": eof, "other_way": _recv_exactly(client, 5)}


def shutdown_both_eof_after_data(net: Net) -> dict[str, Any]:
    """Bytes sent before close are all read before EOF, also when the reader
    comes late."""
    client, server = net.pair()
    client.sendall(b"x" * 100_000)
    client.close()
    time.sleep(SETTLE)
    got = _recv_exactly(server, 200_000)
    return {"got": len(got), "eof": server.recv(10)}


def close_with_unread_data(net: Net) -> dict[str, Any]:
    """The receiver closes with bytes unread: TCP resets the connection,
    and the sender's next write fails with ECONNRESET, later ones EPIPE."""
    client, server = net.pair()
    client.sendall(b"u" * 1000)
    time.sleep(SETTLE)
    server.close()
    time.sleep(SETTLE)
    seen = []
    for _ in range(2):
        try:
            client.send(b"w" * 10)
            seen.append("sent")
        except OSError as exc:
            seen.append(_err(exc))
        time.sleep(SETTLE / 2)
    return {"writes": seen}


def close_with_unread_data_reader(net: Net) -> dict[str, Any]:
    """The same reset as the peer's reader sees it: ECONNRESET on recv."""
    client, server = net.pair()
    client.sendall(b"u" * 1000)
    time.sleep(SETTLE)
    server.close()
    time.sleep(SETTLE)
    return {"recv": _recv_or_errno(client, 10)}


def so_linger_zero(net: Net) -> dict[str, Any]:
    """SO_LINGER 0 then close: an abortive close, the peer reads ECONNRESET."""
    client, server = net.pair()
    client.sendall(b"before")
    _recv_exactly(server, 6)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    time.sleep(SETTLE)
    return {"recv": _recv_or_errno(server, 10)}


# --- urgent data -------------------------------------------------------------------


def _send_urgent(net: Net, inline: bool = False) -> tuple[socket.socket, bool]:
    """A pair that exchanged and read a little, then "ab", urgent "!", "cd";
    returns the receiving end and whether select() saw an exceptional
    condition on it."""
    client, server = net.pair()
    if inline:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
    client.sendall(b"hello")
    _recv_exactly(server, 5)
    client.send(b"ab")
    client.send(b"!", socket.MSG_OOB)
    client.send(b"cd")
    time.sleep(SETTLE)
    return server, bool(select.select([], [], [server], SETTLE)[2])


def urgent_data(net: Net) -> dict[str, Any]:
    """MSG_OOB after a read-up exchange: select's exceptional set, POLLPRI,
    SIOCATMARK before and at the mark, recv(MSG_OOB) gets the urgent byte,
    and the in-band stream does not contain it."""
    server, exceptional = _send_urgent(net)
    poller = select.poll()
    poller.register(server, select.POLLIN | select.POLLPRI)
    pri = any(ev & select.POLLPRI for _, ev in poller.poll(int(SETTLE * 1000)))
    mark_first = _ioctl_int(server, SIOCATMARK)
    before_mark = _recv_exactly(server, 2)
    at_mark = _ioctl_int(server, SIOCATMARK)
    oob = _recv_or_errno(server, 1, socket.MSG_OOB)
    rest = _recv_exactly(server, 2)
    return {
        "exceptional": exceptional,
        "pollpri": pri,
        "atmark_first": mark_first,
        "before_mark": before_mark,
        "atmark_then": at_mark,
        "oob": oob,
        "rest": rest,
    }


def urgent_inline(net: Net) -> dict[str, Any]:
    """SO_OOBINLINE: the urgent byte stays in the stream, at its place."""
    server, exceptional = _send_urgent(net, inline=True)
    return {"exceptional": exceptional, "stream": _recv_exactly(server, 5)}


# --- receive flags and queue ioctls --------------------------------------------------


def peek(net: Net) -> dict[str, Any]:
    """MSG_PEEK returns bytes without consuming them."""
    client, server = net.pair()
    client.sendall(b"peekaboo")
    time.sleep(SETTLE)
    first = server.recv(4, socket.MSG_PEEK)
    again = server.recv(4, socket.MSG_PEEK)
    return {"peek": first, "peek_again": again, "read": _recv_exactly(server, 8)}


def waitall(net: Net) -> dict[str, Any]:
    """MSG_WAITALL waits for the whole count across several writes."""
    client, server = net.pair()

    def trickle() -> None:
        for i in range(5):
            client.sendall(bytes([65 + i]) * 10)
            time.sleep(0.03)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    got = server.recv(50, socket.MSG_WAITALL)
    t.join(10)
    return {"got": got}


def trunc(net: Net) -> dict[str, Any]:
    """MSG_TRUNC on TCP discards the bytes it counts; the next read goes on
    after them."""
    client, server = net.pair()
    client.sendall(b"0123456789abcdef")
    time.sleep(SETTLE)
    n = len(server.recv(10, socket.MSG_TRUNC))
    return {"discarded": n, "next": _recv_exactly(server, 6)}


def inq(net: Net) -> dict[str, Any]:
    """FIONREAD: the bytes waiting to be read, before and after a read."""
    client, server = net.pair()
    client.sendall(b"z" * 3000)
    time.sleep(SETTLE)
    before = _ioctl_int(server, SIOCINQ)
    _recv_exactly(server, 1000)
    return {"before": before, "after_1000": _ioctl_int(server, SIOCINQ)}


def outq(net: Net) -> dict[str, Any]:
    """SIOCOUTQ: nothing left in the send queue once the peer has the bytes."""
    client, server = net.pair()
    client.sendall(b"o" * 5000)
    _recv_exactly(server, 5000)
    time.sleep(SETTLE)
    return {"outq": _ioctl_int(client, SIOCOUTQ)}


def rcvlowat(net: Net) -> dict[str, Any]:
    """SO_RCVLOWAT 1000 with 500 bytes queued: not readable, and a blocking
    read waits until the mark's worth is there (600 more, sent later)."""
    client, server = net.pair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1000)
    client.sendall(b"l" * 500)
    below = _readable(server)
    later = threading.Timer(SETTLE, client.sendall, args=(b"m" * 600,))
    later.start()
    first = len(server.recv(4096))
    later.join()
    _recv_exactly(server, 1100 - first)
    return {"readable_below_mark": below, "first_blocking_read": first}


# --- write coalescing options ------------------------------------------------------------


def nodelay_small_writes(net: Net) -> dict[str, Any]:
    """TCP_NODELAY with request-sized writes: each arrives, in order."""
    client, server = net.pair()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seen = []
    for i in range(20):
        client.sendall(b"%03d" % i)
        seen.append(_recv_exactly(server, 3))
    return {"all": b"".join(seen)}


def cork(net: Net) -> dict[str, Any]:
    """TCP_CORK holds small writes back until uncorked."""
    client, server = net.pair()
    client.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 1)
    client.sendall(b"a")
    client.sendall(b"b")
    held = not _readable(server, HOLD_CHECK)
    client.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 0)
    return {"held_while_corked": held, "then": _recv_exactly(server, 2)}


def msg_more(net: Net) -> dict[str, Any]:
    """MSG_MORE: a small write announced as partial is held back until a
    write without it."""
    client, server = net.pair()
    client.send(b"head", socket.MSG_MORE)
    held = not _readable(server, HOLD_CHECK)
    client.send(b"tail")
    return {"held_with_more": held, "then": _recv_exactly(server, 8)}


# --- zero-copy paths ----------------------------------------------------------------------


def sendfile_(net: Net) -> dict[str, Any]:
    """sendfile(2) from a file: the bytes arrive intact."""
    client, server = net.pair()
    data = os.urandom(3 << 20)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        got: dict[str, bytes] = {}
        t = threading.Thread(target=lambda: got.update(d=_recv_exactly(server, len(data))), daemon=True)
        t.start()
        f.seek(0)
        client.sendfile(f)  # os.sendfile, waiting for room between calls
        t.join(30)
    return {"intact": got.get("d") == data}


def splice_(net: Net) -> dict[str, Any]:
    """splice(2) both ways: a queued 4 KiB from the socket into a pipe (as
    Go's io.Copy between two TCP connections and HAProxy's splice options
    read), then from a pipe into the socket."""
    client, server = net.pair()
    took, intact = splice_probe(client, server)
    r, w = os.pipe()
    try:
        os.write(w, b"spliced")
        n = os.splice(r, server.fileno(), 7)
        back = _recv_exactly(client, n)
    finally:
        os.close(r)
        os.close(w)
    return {"splice_took": took, "all_bytes_then_read": intact, "spliced_send": back}


# --- readiness --------------------------------------------------------------------------------


def readiness(net: Net) -> dict[str, Any]:
    """select, poll and epoll: readable once data arrives, not before;
    EPOLLRDHUP after the peer's SHUT_WR; writable on a fresh socket."""
    client, server = net.pair()
    ep = select.epoll()
    ep.register(server.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
    try:
        before = ep.poll(SETTLE)
        client.sendall(b"ready")
        after = {ev for _, ev in ep.poll(SETTLE)}
        sel = _readable(server)
        _recv_exactly(server, 5)
        drained = ep.poll(SETTLE)
        client.shutdown(socket.SHUT_WR)
        hup = {ev for _, ev in ep.poll(SETTLE)}
    finally:
        ep.close()
    writable = bool(select.select([], [client], [], SETTLE)[1])
    return {
        "epoll_before": bool(before),
        "epoll_in": any(ev & select.EPOLLIN for ev in after),
        "select_readable": sel,
        "epoll_after_drain": bool(drained),
        "rdhup": any(ev & select.EPOLLRDHUP for ev in hup),
        "writable": writable,
    }


def epollout_after_full(net: Net) -> dict[str, Any]:
    """A sender filled until EAGAIN is not writable; once the receiver
    drains, an edge-triggered EPOLLOUT comes."""
    client, server = net.pair()
    queued = _fill(client)
    full_writable = bool(select.select([], [client], [], 0)[1])
    ep = select.epoll()
    ep.register(client.fileno(), select.EPOLLOUT | select.EPOLLET)
    try:
        ep.poll(0)  # consume the edge registration reports
        _recv_exactly(server, queued)
        back = ep.poll(2.0)
    finally:
        ep.close()
    return {"writable_when_full": full_writable, "epollout_after_drain": any(ev & select.EPOLLOUT for _, ev in back)}


# --- asyncio -----------------------------------------------------------------------------------


def asyncio_streams(net: Net) -> dict[str, Any]:
    """An asyncio echo server and client over streams, and loop.sendfile."""

    async def main(payload_file: Any) -> dict[str, Any]:
        lst = net.listener()
        lst.setblocking(False)
        blob = os.urandom(1 << 20)
        payload_file.write(blob)
        payload_file.flush()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        srv = await asyncio.start_server(echo, sock=lst)
        async with srv:
            client = net.connect(lst)
            client.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=client)
            lines = []
            for i in range(50):
                writer.write(b"line %d\n" % i)
                await writer.drain()
                lines.append(await reader.readline())
            payload_file.seek(0)
            await asyncio.get_running_loop().sendfile(writer.transport, payload_file)
            echoed = await reader.readexactly(len(blob))
            writer.close()
            await writer.wait_closed()
        return {"lines": lines == [b"line %d\n" % i for i in range(50)], "sendfile_echo": echoed == blob}

    with tempfile.TemporaryFile() as f:
        return asyncio.run(main(f))


PROBES: list[Callable[[Net], dict[str, Any]]] = [
    nonblocking_send_limit,
    blocking_send_times_out,
    receive_timeout,
    peer_closes_midway,
    shutdown_write,
    shutdown_read,
    shutdown_both_eof_after_data,
    close_with_unread_data,
    close_with_unread_data_reader,
    so_linger_zero,
    urgent_data,
    urgent_inline,
    peek,
    waitall,
    trunc,
    inq,
    outq,
    rcvlowat,
    nodelay_small_writes,
    cork,
    msg_more,
    sendfile_,
    splice_,
    readiness,
    epollout_after_full,
    asyncio_streams,
]
