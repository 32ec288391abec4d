"""Streams of small writes move to TCP, where TCP is faster; request/response
traffic stays redirected however fast the round trips; nothing is lost or
reordered at the switch (bpf/redir.c, small_write_stream)."""

from __future__ import annotations

import socket
import threading

from .test_lifecycle import Stream
from .traffic import connected_pair

MSG = 64
TCP_NOTSENT_LOWAT = 25  # linux/tcp.h
COUNT = 20_000
# A build whose burst rule ignores time: 64 small writes with no reply
# between are a stream however slowly they come (60 s gap).
NO_BURST_GAP = ("--bpf-define", "ACCEL_BURST_GAP_NS=60000000000ULL")


def stream_small_writes(ctl, addr: str = "127.0.0.1", size: int = MSG, before_send=None, after=None, **pair) -> dict[str, int]:
    """One direction, ``COUNT`` writes of ``size`` bytes, read by a thread;
    returns the counter deltas after checking every byte. ``before_send``
    and ``after`` get the sending socket before its first write and after
    its last byte was read."""
    client, server = connected_pair(addr, **pair)
    if before_send:
        before_send(client)
    data = bytes(i % 251 for i in range(size * COUNT))
    got = bytearray()

    def read() -> None:
        while len(got) < len(data):
            chunk = server.recv(1 << 20)
            if not chunk:
                return
            got.extend(chunk)

    before = ctl.counters()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for i in range(COUNT):
        client.sendall(data[i * size : (i + 1) * size])
    reader.join(60)
    counters = ctl.counters()
    if after:
        after(client)
    client.close()
    server.close()
    assert bytes(got) == data, "lost or reordered at the switch"
    return {k: counters[k] - before[k] for k in counters}


def ping_pong(ctl, rounds: int = 2000) -> dict[str, int]:
    client, server = connected_pair("127.0.0.1")
    before = ctl.counters()
    for i in range(rounds):
        msg = i.to_bytes(4, "big") * (MSG // 4)
        client.sendall(msg)
        assert server.recv(MSG, 0x100) == msg  # MSG_WAITALL
        server.sendall(msg)
        assert client.recv(MSG, 0x100) == msg
    after = ctl.counters()
    client.close()
    server.close()
    return {k: after[k] - before[k] for k in after}


def test_a_stream_of_small_writes_moves_to_tcp_whole(accel_env):
    d = stream_small_writes(accel_env)
    assert d["fallback_small_writes"] == 1
    assert d["redirected_msgs"] >= 64  # the burst that revealed the stream
    assert d["redirected_bytes"] + d["fallback_bytes"] == MSG * COUNT
    assert d["fallback_bytes"] > d["redirected_bytes"]


def _unsent_limit(sock) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT)


def test_a_socket_on_tcp_for_good_drops_the_unsent_limit(accel_env):
    """The 128 KiB TCP_NOTSENT_LOWAT that accel gives a socket (so that a
    waiting sender can come back sooner) is undone once the socket is on TCP
    for good: it cost a released 64 B stream between pods 0.71-0.89x of
    plain TCP. An application's own limit is left alone."""
    seen: dict[str, int] = {}
    client, server = connected_pair("127.0.0.1")
    seen["redirecting"] = _unsent_limit(client)
    client.close()
    server.close()
    d = stream_small_writes(accel_env, after=lambda c: seen.update(moved=_unsent_limit(c)))
    assert d["fallback_small_writes"] == 1
    assert seen == {"redirecting": 128 << 10, "moved": 0}, seen

    def own_limit(c) -> None:
        c.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 4096)

    d = stream_small_writes(accel_env, before_send=own_limit, after=lambda c: seen.update(own=_unsent_limit(c)))
    assert d["fallback_small_writes"] == 1
    assert seen["own"] == 4096


def test_large_writes_stay_redirected(accel_env):
    d = stream_small_writes(accel_env, size=16384)
    assert d["fallback_small_writes"] == 0
    # A reader thread that falls behind (a busy machine) makes the sender
    # wait on TCP now and then: flow control, not the small-write rule.
    assert d["fallback_msgs"] == d["fallback_wait"]
    assert d["redirected_bytes"] + d["fallback_bytes"] == 16384 * COUNT and d["redirected_bytes"] > 0


def test_request_response_stays_redirected_however_fast(fresh_env):
    """With the time gap made huge, only the other end's replies keep a
    ping-pong from counting as a stream: they must."""
    ctl = fresh_env
    ctl.start(*NO_BURST_GAP)
    d = ping_pong(ctl)
    assert d["fallback_msgs"] == 0
    assert d["redirected_msgs"] == 2 * 2000
    # The same build still catches a one-way stream.
    assert stream_small_writes(ctl)["fallback_small_writes"] == 1


def test_the_rule_can_be_turned_off(fresh_env):
    ctl = fresh_env
    ctl.start("--no-small-write-fallback")
    d = stream_small_writes(ctl)
    assert d["fallback_msgs"] == 0 and d["redirected_bytes"] == MSG * COUNT


def test_a_live_record_stream_survives_the_switch(accel_env):
    """Records of 1 KiB written back to back (same-namespace: small) while the
    other side reads: the switch happens mid-stream and every record arrives."""
    before = accel_env.counters()
    stream = Stream(*connected_pair("127.0.0.1"), record=1024).start()
    threading.Event().wait(1.0)
    stream.finish()
    d = {k: v - before[k] for k, v in accel_env.counters().items()}
    assert d["fallback_small_writes"] == 1


def test_the_limits_are_the_controllers_to_set(fresh_env):
    """--small-write-local raised past the write size: a 16 KiB loopback
    stream, which stays redirected by default (test above), moves to TCP
    whole; status says which limits the run built with.

    The time gap is made huge so that only the size limit decides: 16 KiB
    writes from Python, with the reader thread taking the GIL to copy each
    1 MiB it reads, are not always 64 in a row within 50 us of each other.
    A slow CI machine found its burst only after 15,700 of the 20,000
    writes (fallback 70 MB, redirected 258 MB)."""
    ctl = fresh_env
    ctl.start("--small-write-local", "32768", "--small-write-remote", "4096", *NO_BURST_GAP)
    assert ctl.status()["small_writes"] == {"rule": "on", "local": 32768, "remote": 4096}
    d = stream_small_writes(ctl, size=16384)
    assert d["fallback_small_writes"] == 1
    # Moved after a burst; what it sent after its release (a second after
    # the move) no counter sees.
    assert d["fallback_bytes"] > d["redirected_bytes"]
    assert d["redirected_bytes"] + d["fallback_bytes"] <= 16384 * COUNT
    human = ctl.cli("status").stdout
    assert "32,768 B on loopback, 4,096 B between namespaces" in human


def test_a_bad_limit_is_refused_before_anything_loads(fresh_env):
    res = fresh_env.cli("run", "--cgroup", fresh_env.cgroup, "--small-write-local", "0", check=False)
    assert res.returncode != 0
    assert "small-write-local must be between 1 and 1048576 bytes" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr
