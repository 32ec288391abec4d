"""Upgrades that change a pinned map's layout (invariant 7). bcc would reuse
a pinned map whatever its layout; the controller must notice, replace what it
can without touching live connections, and refuse, clearly, what it cannot."""

from __future__ import annotations

import ctypes
import os

from accel import libbpf
from accel.maps import LAYOUTS, layout_mismatches

from .test_lifecycle import Stream, assert_nothing_left, sockhash_id, wait_redirected_more
from .traffic import connected_pair

REPLACED = "replaced a pinned map made by another accel version"


def pin_map(pin_dir: str, name: str, layout: tuple[int, int, int], entries: int) -> int:
    """Pin a map of ``layout`` as ``name``, as another version would have."""
    path = os.path.join(pin_dir, name)
    if os.path.exists(path):
        os.unlink(path)
    fd = libbpf.map_create(*layout, entries)
    libbpf.obj_pin(fd, path)
    return fd


def older(name: str, value_delta: int = 0, key_delta: int = 0) -> tuple[int, int, int]:
    kind, key, value = LAYOUTS[name]
    return kind, key + key_delta, value + value_delta


def test_maps_of_an_older_layout_are_replaced_under_live_connections(fresh_env):
    ctl = fresh_env
    ctl.start()
    map_id = sockhash_id(ctl.pin_dir)
    stream = Stream(*connected_pair("127.0.0.1")).start()
    seen = wait_redirected_more(ctl, 0)
    assert ctl.stop() == 0  # a rollout: the old agent stops, its connection lives on

    # What the previous release pinned: one counter fewer, a wider flow config.
    for name, layout in (("stats", older("stats", value_delta=-8)), ("flow", older("flow", value_delta=8))):
        os.close(pin_map(ctl.pin_dir, name, layout, 1))
    assert {m.name for m in layout_mismatches(ctl.pin_dir)} == {"stats", "flow"}
    res = ctl.cli("status", "--json", check=False)
    assert res.returncode == 69 and "pinned by another accel version" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr

    ctl.start()
    assert ctl.log().count(REPLACED) == 2, ctl.log_tail()
    assert layout_mismatches(ctl.pin_dir) == []
    assert sockhash_id(ctl.pin_dir) == map_id, "the sockhash itself must be reused"
    # The old connection runs on through the programs it joined with...
    stream.finish()
    # ...and new ones are accelerated and counted in the new counters.
    c2, s2 = connected_pair("127.0.0.1")
    payload = os.urandom(100_000)
    c2.sendall(payload)
    got = b""
    while len(got) < len(payload):
        got += s2.recv(65536)
    assert got == payload
    assert ctl.counters()["redirected_bytes"] >= len(payload)
    assert seen > 0
    c2.close()
    s2.close()
    assert ctl.stop() == 0
    assert_nothing_left(ctl)


def test_a_socket_map_of_another_layout_is_kept_aside_while_it_holds_sockets(fresh_env):
    ctl = fresh_env
    os.makedirs(ctl.pin_dir, mode=0o700)
    for name in ("endpoints", "stats"):
        os.close(pin_map(ctl.pin_dir, name, LAYOUTS[name], 16384 if name == "endpoints" else 1))
    # Another version's sockhash: a shorter key, holding a live socket.
    sh = pin_map(ctl.pin_dir, "sock_hash", older("sock_hash", key_delta=-8), 64)
    client, server = connected_pair("127.0.0.1")
    key = (ctypes.c_ubyte * (LAYOUTS["sock_hash"][1] - 8))(1)
    libbpf.map_update(sh, key, ctypes.c_uint64(server.fileno()))
    assert libbpf.map_count(sh) == 1
    old_id = int(libbpf.map_info(sh)["id"])

    # This version starts with a socket map of its own; the old one is set
    # aside, still pinned, with its socket (unpinning it would purge that
    # socket's unread bytes).
    ctl.start()
    assert "kept aside until they close" in ctl.log(), ctl.log_tail()
    assert sockhash_id(ctl.pin_dir) != old_id
    retired = [n for n in os.listdir(ctl.pin_dir) if n.startswith("retired-sock_hash-")]
    assert retired == [f"retired-sock_hash-{old_id}"], os.listdir(ctl.pin_dir)
    assert libbpf.map_count(sh) == 1, "the live socket must stay in its map"
    assert ctl.status()["retired_sockets"] == 1
    client.sendall(b"still here")
    assert server.recv(64) == b"still here"
    # New connections use the new map.
    c2, s2 = connected_pair("127.0.0.1")
    c2.sendall(b"accelerated")
    assert s2.recv(64) == b"accelerated"
    assert ctl.counters()["redirected_bytes"] >= len(b"accelerated")
    c2.close()
    s2.close()
    # While the old socket lives, stopping keeps every pin...
    assert ctl.stop() == 0
    res = ctl.cli("down", check=False)
    assert res.returncode == 3, res.stdout + res.stderr
    assert os.path.exists(os.path.join(ctl.pin_dir, retired[0]))
    # ...and once it has closed, down removes the set-aside map too.
    client.close()
    server.close()
    assert libbpf.map_count(sh) == 0
    os.close(sh)
    ctl.cli("down")
    assert_nothing_left(ctl)
