"""`accel conns`: each end's path as the datapath last decided it (bpf/redir.c
writes a socket's changes of mode into conn_flows), read through the real
CLI: redirecting, waiting on TCP and back, on TCP for good and why, released,
and gone once the sockets close."""

from __future__ import annotations

import errno
import json
import socket
import threading

from accel.maps import PinnedMaps
from tests.waiting import wait_for

from .test_release import read_exactly, small_writes
from .test_small_writes import MSG
from .traffic import connected_pair

CHUNK = 256 << 10  # far above the small-write limit: only flow control can move it


def conns(ctl) -> dict:
    res = ctl.cli("conns", "--json")
    assert "Traceback" not in res.stderr
    return json.loads(res.stdout)


def row_of(ctl, client: socket.socket) -> tuple[dict, str]:
    """The row of ``client``'s connection, and which side ('a' or 'b') is
    the client."""
    me = "{}:{}".format(*client.getsockname()[:2])
    for r in conns(ctl)["connections"]:
        if me in (r["a"], r["b"]):
            return r, ("a" if r["a"] == me else "b")
    raise AssertionError(f"no row for {me} in accel conns")


def other(side: str) -> str:
    return "b" if side == "a" else "a"


def test_a_redirecting_connection_shows_both_ends_on_the_fast_path(accel_env):
    client, server = connected_pair("127.0.0.1")
    try:
        client.sendall(b"x" * 10_000)
        assert read_exactly(server, 10_000) == b"x" * 10_000
        row, _ = row_of(accel_env, client)
        assert row["both_ends_accelerated"] and not row["released"]
        for side in "ab":
            assert row[f"{side}_path"]["mode"] == "redirect"
            assert row[f"{side}_path"]["waits"] == 0
        table = accel_env.cli("conns").stdout
        assert "redirect" in table and "sockets in the fast path" in table
    finally:
        client.close()
        server.close()


def test_a_sender_whose_reader_pauses_shows_its_wait_and_its_return(accel_env):
    client, server = connected_pair("127.0.0.1")
    try:
        client.setblocking(False)
        sent = bytearray()
        chunk = bytes(range(256)) * (CHUNK // 256)
        while True:  # the reader reads nothing: the sender must wait, then TCP pushes back
            try:
                n = client.send(chunk)
            except OSError as exc:
                assert exc.errno == errno.EAGAIN, exc
                break
            sent += chunk[:n]
        row, me = row_of(accel_env, client)
        path = row[f"{me}_path"]
        assert path["mode"] == "wait" and path["waits"] >= 1 and path["returns"] == 0, path
        assert row[f"{other(me)}_path"]["mode"] == "redirect", "the reader sent nothing: it never changed"
        assert "wait" in accel_env.cli("conns").stdout

        got = read_exactly(server, len(sent))
        assert got == bytes(sent)
        client.setblocking(True)
        # The send after an EAGAIN reuses the kept PASS verdict without
        # running the program (docs/DESIGN.md, kernel behaviour); the next
        # one finds every TCP byte read and goes back to the fast path.
        for _ in range(2):
            client.sendall(b"y" * 8192)
            assert read_exactly(server, 8192) == b"y" * 8192
        row, me = row_of(accel_env, client)
        path = row[f"{me}_path"]
        assert path["mode"] == "redirect" and path["returns"] == path["waits"] >= 1, path
        assert path["waited_s"] > 0
    finally:
        client.close()
        server.close()


def test_a_moved_connection_shows_why_and_then_that_it_was_released(accel_env):
    client, server = connected_pair("127.0.0.1")
    try:
        got = bytearray()
        burst = 2000
        reader = threading.Thread(target=lambda: got.extend(read_exactly(server, burst * MSG)), daemon=True)
        reader.start()
        sent = small_writes(client, burst)
        reader.join(30)
        assert bytes(got) == sent

        def released() -> bool:
            return row_of(accel_env, client)[0]["released"]

        wait_for(released, "the connection released (out of the sockhash, still open)")
        row, me = row_of(accel_env, client)
        assert not row["both_ends_accelerated"]
        assert row[f"{me}_path"]["mode"] == "tcp" and row[f"{me}_path"]["reason"] == "small_writes", row
        # The reader never sent, so it never changed mode: release took it
        # out of the map without a move of its own.
        assert row[f"{other(me)}_path"]["mode"] == "redirect", row
        assert "released" in accel_env.cli("conns").stdout
        # A released connection is plain TCP and still works.
        client.sendall(b"after")
        assert read_exactly(server, 5) == b"after"
    finally:
        client.close()
        server.close()


def test_closed_sockets_leave_nothing_behind(accel_env):
    client, server = connected_pair("127.0.0.1")
    sent = small_writes(client, 300)
    assert read_exactly(server, len(sent)) == sent
    port = client.getsockname()[1]
    with PinnedMaps(accel_env.pin_dir) as maps:
        assert any(e.local_port == port for e, _ in maps.conn_flows()), "the move to TCP was noted"
    client.close()
    server.close()

    def gone() -> bool:
        with PinnedMaps(accel_env.pin_dir) as maps:
            return not any(port in (e.local_port, e.remote_port) for e, _ in maps.conn_flows())

    wait_for(gone, "both ends' entries removed at TCP_CLOSE")
    assert all(f"127.0.0.1:{port}" not in (r["a"], r["b"]) for r in conns(accel_env)["connections"])
