"""A connection that reuses a tuple through TIME_WAIT gets its own bytes,
and the old socket still holding that tuple gets none of them (issue: bytes
delivered to the wrong connection).

The sequence is the one the churn soak hit: a client that half-closes and
keeps its fd until it has read the echo and EOF sits in TIME_WAIT with its fd
open; the kernel then hands the same tuple to a new connection
(net.ipv4.tcp_tw_reuse is 2 in a new namespace: reuse for loopback).
"""

from __future__ import annotations

import socket
import time

import pytest

from accel.netns import entered
from accel.sandbox import create_netns, remove_netns, scratch

TW_REUSE_DELAY = 1.2  # tcp_tw_reuse waits 1 s after the last timestamp


@pytest.fixture
def pod_ns():
    name = scratch("tw", netns=True)
    create_netns(name)
    try:
        yield name
    finally:
        remove_netns(name)


def _listener(ns: str) -> socket.socket:
    with entered(ns):
        lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    lst.settimeout(10)
    return lst


def _client(ns: str, port: int, bind_port: int) -> socket.socket:
    with entered(ns):
        c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind(("127.0.0.1", bind_port))
    c.settimeout(10)
    c.connect(("127.0.0.1", port))
    return c


def _recv_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def _tcp_state(ns: str, local_port: int) -> str:
    """The state of the connection whose local port is ``local_port``, as ss sees it."""
    import subprocess

    res = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htan", "state", "all", f"( sport = :{local_port} )"], capture_output=True, text=True, check=False)
    return res.stdout.split()[0] if res.stdout.split() else ""


def _first_connection(ns: str, lst: socket.socket, request: bytes, read_echo: bool) -> tuple[socket.socket, bytes]:
    """c1: connect, send, half-close; the server echoes, shuts down, closes.
    Returns c1 (fd open, connection in TIME_WAIT) and what c1 read."""
    c1 = _client(ns, lst.getsockname()[1], 0)
    s1, _ = lst.accept()
    s1.settimeout(10)
    c1.sendall(request)
    c1.shutdown(socket.SHUT_WR)
    assert _recv_all(s1) == request
    s1.sendall(b"ECHO:" + request)
    s1.shutdown(socket.SHUT_WR)
    s1.close()
    got = _recv_all(c1) if read_echo else b""
    port = c1.getsockname()[1]
    deadline = time.monotonic() + 5
    while _tcp_state(ns, port) != "TIME-WAIT" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _tcp_state(ns, port) == "TIME-WAIT", "c1 should be in TIME_WAIT with its fd open"
    return c1, got


def _reuse(ns: str, lst: socket.socket, c1: socket.socket) -> tuple[socket.socket, socket.socket]:
    """c2 binds c1's port while c1 is in TIME_WAIT: the same tuple, reused."""
    time.sleep(TW_REUSE_DELAY)
    c2 = _client(ns, lst.getsockname()[1], c1.getsockname()[1])
    s2, _ = lst.accept()
    s2.settimeout(10)
    assert c2.getsockname() == c1.getsockname(), "the kernel did not reuse the tuple"
    return c2, s2


def test_new_connection_on_a_reused_tuple_gets_its_own_bytes(accel_env, pod_ns):
    lst = _listener(pod_ns)
    before = accel_env.counters()
    c1, echoed = _first_connection(pod_ns, lst, b"first request", read_echo=True)
    assert echoed == b"ECHO:first request"
    c2, s2 = _reuse(pod_ns, lst, c1)
    try:
        s2.sendall(b"NEW-CONNECTION-DATA")
        c2.sendall(b"REQUEST-2")
        assert s2.recv(100) == b"REQUEST-2"
        got = b""
        while len(got) < len(b"NEW-CONNECTION-DATA"):
            chunk = c2.recv(100)
            assert chunk, "c2 saw EOF before its data"
            got += chunk
        assert got == b"NEW-CONNECTION-DATA"
        # The old socket got nothing more than its own EOF.
        c1.setblocking(False)
        assert c1.recv(100) == b""
        after = accel_env.counters()
        # The new connection was accelerated: nothing failed to insert, and
        # its bytes were redirected (the old socket's entry did not block it).
        assert after["insert_failed"] == before["insert_failed"], (before, after)
        assert after["redirected_bytes"] - before["redirected_bytes"] >= len(b"NEW-CONNECTION-DATA") + len(b"REQUEST-2")
    finally:
        for s in (c1, c2, s2, lst):
            s.close()


def test_old_socket_keeps_its_unread_bytes_while_the_tuple_is_reused(accel_env, pod_ns):
    lst = _listener(pod_ns)
    c1, _ = _first_connection(pod_ns, lst, b"x" * 5000, read_echo=False)
    c2, s2 = _reuse(pod_ns, lst, c1)
    try:
        s2.sendall(b"NEW-CONNECTION-DATA")
        c2.shutdown(socket.SHUT_WR)
        s2.shutdown(socket.SHUT_WR)
        # The old socket's echo, redirected before the reuse, is still there
        # and whole; the new bytes are not mixed in.
        assert _recv_all(c1) == b"ECHO:" + b"x" * 5000
        assert _recv_all(c2) == b"NEW-CONNECTION-DATA"
        assert _recv_all(s2) == b""
    finally:
        for s in (c1, c2, s2, lst):
            s.close()
