"""Real sockets, real bytes: connect pairs in chosen namespaces and move
checksummed data through them."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
from dataclasses import dataclass

from accel.netns import socket_in

TIMEOUT = 60.0


def connected_pair(
    server_addr: str,
    *,
    server_ns: str | None = None,
    client_ns: str | None = None,
    listen_addr: str | None = None,
    client_bind: tuple[str, int] | None = None,
    port: int = 0,
    wait_accept: bool = True,
) -> tuple[socket.socket, socket.socket]:
    """(client, server) of one TCP connection. ``listen_addr`` "::" makes a
    dual-stack server (AF_INET6 socket accepting IPv4 as v4-mapped)."""
    bind_addr = listen_addr or server_addr
    lfam = socket.AF_INET6 if ":" in bind_addr else socket.AF_INET
    cfam = socket.AF_INET6 if ":" in server_addr else socket.AF_INET
    listener = socket_in(server_ns, lfam)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if lfam == socket.AF_INET6:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind((bind_addr, port))
    listener.listen(16)
    port = listener.getsockname()[1]
    client = socket_in(client_ns, cfam)
    if client_bind:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        client.bind(client_bind)
    client.settimeout(TIMEOUT)
    client.connect((server_addr, port))
    server, _ = listener.accept()
    listener.close()
    server.settimeout(TIMEOUT)
    return client, server


@dataclass
class Flow:
    sent: int = 0
    received: int = 0
    sent_digest: str = ""
    received_digest: str = ""
    error: str = ""


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _writer(sock: socket.socket, data: bytes, write_size: int, flow: Flow) -> None:
    try:
        view = memoryview(data)
        for off in range(0, len(data), write_size):
            sock.sendall(view[off : off + write_size])
        flow.sent = len(data)
        flow.sent_digest = hashlib.sha256(data).hexdigest()
        sock.shutdown(socket.SHUT_WR)
    except Exception as exc:  # reported, asserted by the caller
        flow.error = f"write: {exc!r}"


def _reader(sock: socket.socket, seed: int, max_read: int, flow: Flow) -> None:
    rng = random.Random(seed)
    h = hashlib.sha256()
    total = 0
    try:
        while True:
            chunk = sock.recv(rng.randint(1, max_read))
            if not chunk:
                break
            h.update(chunk)
            total += len(chunk)
    except Exception as exc:
        flow.error = f"read: {exc!r}"
    flow.received = total
    flow.received_digest = h.hexdigest()


def exchange(a: socket.socket, b: socket.socket, ab: bytes, ba: bytes, write_size: int, max_read: int = 300_000, seed: int = 1) -> tuple[Flow, Flow]:
    """Full duplex: a sends ``ab`` while b sends ``ba``; each side reads in
    random sizes unrelated to the writes. Returns the two flows (a->b, b->a)."""
    f_ab, f_ba = Flow(), Flow()
    threads = [
        threading.Thread(target=_writer, args=(a, ab, write_size, f_ab), daemon=True),
        threading.Thread(target=_writer, args=(b, ba, write_size, f_ba), daemon=True),
        threading.Thread(target=_reader, args=(b, seed, max_read, f_ab), daemon=True),
        threading.Thread(target=_reader, args=(a, seed + 1, max_read, f_ba), daemon=True),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
        assert not t.is_alive(), "transfer hung"
    return f_ab, f_ba


def assert_intact(flow: Flow) -> None:
    assert not flow.error, flow.error
    assert flow.received == flow.sent, f"received {flow.received} of {flow.sent} bytes"
    assert flow.received_digest == flow.sent_digest, "content differs (reordered or corrupted)"
