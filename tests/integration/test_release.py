"""Release (accel/release.py): a connection whose sockets moved to TCP for
good leaves the sockhash, both ends, once no byte can be lost; a receiver
that still holds unread redirected bytes stays until it has read them; a
controller killed mid-release leaves marks the next one finishes. Every
byte is checked in order, across the move and the release."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import urllib.request

from accel.maps import PinnedMaps
from tests.waiting import wait_for

from .test_small_writes import MSG
from .traffic import connected_pair

BURST = 2000  # small writes: far past the 64 that reveal a stream


def metrics(ctl) -> str:
    with open(os.path.join(ctl.state_dir, "state.json")) as f:
        import json

        port = json.load(f)["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def in_map(ctl, sock) -> bool:
    """Whether this socket (by its addresses) is in the sockhash."""
    local, remote = sock.getsockname()[:2], sock.getpeername()[:2]
    return any((e[1], e[2], e[3], e[4]) == (local[0], local[1], remote[0], remote[1]) for e in ctl.sockets())


def wait_release_counted(ctl) -> None:
    """The controller deletes a release's keys, then removes its marks, then
    counts it: it is no longer pending once it has been counted."""
    wait_for(lambda: metric(metrics(ctl), "accel_releases_pending") == 0, "the release counted")


def small_writes(sock, n: int = BURST, start: int = 0) -> bytes:
    """``n`` writes of MSG bytes as fast as possible (a stream the datapath
    moves to TCP for good); returns what was sent."""
    sent = bytearray()
    for i in range(start, start + n):
        chunk = (i.to_bytes(4, "big") * (MSG // 4))[:MSG]
        sock.sendall(chunk)
        sent += chunk
    return bytes(sent)


def read_exactly(sock, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(min(1 << 20, n - len(got)))
        assert chunk, f"EOF after {len(got)} of {n} bytes"
        got += chunk
    return bytes(got)


def test_a_connection_that_moved_to_tcp_leaves_the_map_both_ends(fresh_env):
    ctl = fresh_env
    ctl.start()
    client, server = connected_pair("127.0.0.1")
    assert in_map(ctl, client) and in_map(ctl, server)
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(read_exactly(server, BURST * MSG)), daemon=True)
    reader.start()
    sent = small_writes(client)
    reader.join(30)
    assert bytes(got) == sent, "lost or reordered at the move to TCP"
    wait_for(lambda: not in_map(ctl, client) and not in_map(ctl, server), "both ends out of the sockhash")
    wait_release_counted(ctl)
    text = metrics(ctl)
    assert metric(text, "accel_released_sockets_total", 'reason="small_writes"') == 2
    assert metric(text, "accel_release_events_total", 'reason="small_writes"') == 1
    assert metric(text, "accel_releases_pending") == 0
    assert metric(text, "accel_release_notify_delay_seconds", 'stat="max"') < 5.0
    # Never sooner than the grace period (1 s) that covers a redirect in flight.
    assert metric(text, "accel_release_latency_seconds", 'stat="max"') >= 1.0
    with PinnedMaps(ctl.pin_dir) as maps:
        assert maps.retiring_keys() == [] and maps.flow_config().retiring == 0
    # Released: plain TCP sockets, both directions, nothing redirected any more.
    before = ctl.counters()
    client.sendall(b"after release " * 1000)
    assert read_exactly(server, 14 * 1000) == b"after release " * 1000
    server.sendall(b"reply" * 1000)
    assert read_exactly(client, 5000) == b"reply" * 1000
    after = ctl.counters()
    assert after["redirected_msgs"] == before["redirected_msgs"] and after["fallback_msgs"] == before["fallback_msgs"], "a released socket runs no sk_msg"
    client.close()
    server.close()


def test_a_receiver_holding_unread_redirected_bytes_is_never_released(fresh_env):
    ctl = fresh_env
    ctl.start()
    client, server = connected_pair("127.0.0.1")
    redirected = os.urandom(200 << 10)  # under the fast path's first bound: all redirected
    before = ctl.counters()
    client.sendall(redirected)
    assert ctl.counters()["redirected_bytes"] - before["redirected_bytes"] == len(redirected)
    # The server reads nothing while the client moves to TCP for good.
    via_tcp = small_writes(client)
    wait_for(lambda: not in_map(ctl, client), "the client (nothing queued for it) released")
    time.sleep(2.0)  # past the grace period, many rechecks later
    assert in_map(ctl, server), "released while it held unread redirected bytes: they would be dropped"
    assert metric(metrics(ctl), "accel_releases_pending") == 1
    # The reader catches up: every byte, in order, and then the server goes too.
    assert read_exactly(server, len(redirected)) == redirected
    assert read_exactly(server, len(via_tcp)) == via_tcp
    wait_for(lambda: not in_map(ctl, server), "the server released once it read its queue")
    wait_release_counted(ctl)
    assert metric(metrics(ctl), "accel_released_sockets_total", 'reason="small_writes"') == 2
    server.sendall(b"x" * 100_000)
    assert read_exactly(client, 100_000) == b"x" * 100_000
    client.close()
    server.close()


def test_a_controller_killed_mid_release_leaves_marks_the_next_one_finishes(fresh_env):
    ctl = fresh_env
    ctl.start("--release-grace", "60")
    client, server = connected_pair("127.0.0.1")
    reader_got = bytearray()
    reader = threading.Thread(target=lambda: reader_got.extend(read_exactly(server, BURST * MSG)), daemon=True)
    reader.start()
    sent = small_writes(client)
    reader.join(30)
    assert bytes(reader_got) == sent
    with PinnedMaps(ctl.pin_dir) as maps:
        wait_for(lambda: len(maps.retiring_keys()) == 2, "both keys marked retiring")
        assert maps.flow_config().retiring == 2
    # The peer is marked: its next send moves it to TCP (counted), in order.
    before = ctl.counters()
    server.sendall(b"peer after mark" * 100)
    assert read_exactly(client, 1500) == b"peer after mark" * 100
    assert ctl.counters()["fallback_retiring"] - before["fallback_retiring"] == 1
    assert in_map(ctl, client) and in_map(ctl, server), "within the grace period both stay"
    ctl.proc.send_signal(signal.SIGKILL)
    ctl.proc.wait(10)
    ctl.proc = None
    with PinnedMaps(ctl.pin_dir) as maps:
        assert len(maps.retiring_keys()) == 2, "the marks outlive the controller"
    ctl.start()  # default grace: it resumes the marked connection
    wait_for(lambda: not in_map(ctl, client) and not in_map(ctl, server), "released by the next controller")
    with PinnedMaps(ctl.pin_dir) as maps:
        assert maps.retiring_keys() == [] and maps.flow_config().retiring == 0
    client.sendall(b"done" * 10_000)
    assert read_exactly(server, 40_000) == b"done" * 10_000
    client.close()
    server.close()


def test_no_release_keeps_moved_sockets_in_the_map(fresh_env):
    """--no-release: the old behaviour, for comparison in the benchmark."""
    ctl = fresh_env
    ctl.start("--no-release")
    client, server = connected_pair("127.0.0.1")
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(read_exactly(server, BURST * MSG)), daemon=True)
    reader.start()
    sent = small_writes(client)
    reader.join(30)
    assert bytes(got) == sent
    time.sleep(2.0)
    assert in_map(ctl, client) and in_map(ctl, server)
    client.close()
    server.close()
