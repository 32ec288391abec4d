"""Stop, restart, crash and `down` in the middle of transfers: nothing lost,
nothing reordered, and nothing left behind at the end (invariant 7)."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time

from accel import abi, kernel, libbpf
from accel.maps import PinnedMaps

from .traffic import connected_pair

# Records of 4 KiB: above the small-write limit (bpf/maps.h), so a stream of
# them stays redirected; test_small_writes passes 1 KiB to force the switch.
RECORD = 4096


class Stream:
    """Client writes numbered records until told to stop; server checks each
    record's number as it reads. Any loss, duplicate or reorder is caught."""

    def __init__(self, client: socket.socket, server: socket.socket, record: int = RECORD) -> None:
        self.client, self.server = client, server
        self.record = record
        self.stop = threading.Event()
        self.sent = 0
        self.received = 0
        self.error = ""
        # Daemons: a failed test must not keep pytest alive on a blocked send.
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> Stream:
        self.writer.start()
        self.reader.start()
        return self

    def _write(self) -> None:
        try:
            while not self.stop.is_set():
                rec = struct.pack("!Q", self.sent) + bytes([self.sent % 256]) * (self.record - 8)
                self.client.sendall(rec)
                self.sent += 1
            self.client.shutdown(socket.SHUT_WR)
        except Exception as exc:
            self.error = f"write: {exc!r}"

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.server.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= self.record:
                    rec, buf = buf[: self.record], buf[self.record :]
                    n = struct.unpack("!Q", rec[:8])[0]
                    if n != self.received or rec[8:] != bytes([n % 256]) * (self.record - 8):
                        self.error = f"record {self.received} expected, got {n}"
                        return
                    self.received += 1
            if buf:
                self.error = f"{len(buf)} trailing bytes"
        except Exception as exc:
            self.error = f"read: {exc!r}"

    def finish(self) -> None:
        self.stop.set()
        self.writer.join(60)
        self.reader.join(60)
        assert not self.writer.is_alive() and not self.reader.is_alive(), "stream hung"
        assert not self.error, self.error
        assert self.received == self.sent > 0
        self.client.close()
        self.server.close()


def sockhash_id(pin_dir: str) -> int:
    fd = libbpf.obj_get(os.path.join(pin_dir, "sock_hash"))
    try:
        return int(libbpf.map_info(fd)["id"])
    finally:
        os.close(fd)


def cgroup_sockops(cgroup: str) -> list[int]:
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return libbpf.prog_query(fd, abi.ATTACH_CGROUP_SOCK_OPS)
    finally:
        os.close(fd)


def wait_redirected_more(ctl, than: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = ctl.counters()["redirected_bytes"]
        if now > than:
            return now
        time.sleep(0.05)
    raise AssertionError("no bytes were redirected")


def assert_nothing_left(ctl) -> None:
    assert not os.path.exists(ctl.pin_dir), os.listdir(ctl.pin_dir)
    assert cgroup_sockops(ctl.cgroup) == []


def test_restart_mid_transfer_loses_and_reorders_nothing(fresh_env):
    ctl = fresh_env
    ctl.start()
    map_id = sockhash_id(ctl.pin_dir)
    stream = Stream(*connected_pair("127.0.0.1")).start()
    seen = wait_redirected_more(ctl, 0)

    assert ctl.stop(signal.SIGINT) == 0  # Ctrl-C in the terminal
    assert "signal=SIGINT" in ctl.log() or '"signal": "SIGINT"' in ctl.log()
    # Stopped: pins kept (the connection is in the map), no sockops attached,
    # and the live connection still goes through the fast path.
    assert PinnedMaps.exists(ctl.pin_dir)
    assert len(ctl.sockets()) == 2
    assert cgroup_sockops(ctl.cgroup) == []
    seen = wait_redirected_more(ctl, seen)

    ctl.start()
    assert sockhash_id(ctl.pin_dir) == map_id, "restart must reuse the pinned sockhash"
    seen = wait_redirected_more(ctl, seen)
    # New connections after the restart are accelerated too.
    c2, s2 = connected_pair("127.0.0.1")
    assert len(ctl.sockets()) == 4
    c2.sendall(b"new")
    assert s2.recv(10) == b"new"
    c2.close()
    s2.close()
    stream.finish()

    assert ctl.stop() == 0
    assert_nothing_left(ctl)  # the map was empty at stop: pins removed


def test_sigkill_then_restart_replaces_the_stale_attachment(fresh_env):
    ctl = fresh_env
    ctl.start()
    stream = Stream(*connected_pair("127.0.0.1")).start()
    seen = wait_redirected_more(ctl, 0)
    old_ids = cgroup_sockops(ctl.cgroup)
    assert len(old_ids) == 1
    ctl.proc.send_signal(signal.SIGKILL)
    ctl.proc.wait(30)
    ctl.proc = None
    # A crash leaves the programs attached (they belong to the kernel): the
    # connection keeps flowing, new connections are still accelerated.
    seen = wait_redirected_more(ctl, seen)
    assert cgroup_sockops(ctl.cgroup) == old_ids
    ctl.start()
    new_ids = cgroup_sockops(ctl.cgroup)
    assert len(new_ids) == 1 and new_ids != old_ids
    wait_redirected_more(ctl, seen)
    stream.finish()
    assert ctl.stop() == 0
    assert_nothing_left(ctl)


def test_down_with_open_connections_loses_nothing_then_cleans_up(fresh_env):
    ctl = fresh_env
    ctl.start()
    client, server = connected_pair("127.0.0.1")
    unread = os.urandom(200_000)
    client.sendall(unread)  # sits in the server's redirected queue, unread
    before = ctl.counters()
    assert before["redirected_bytes"] >= len(unread)

    res = ctl.cli("down", check=False)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "still use the fast path" in res.stdout
    assert ctl.proc.wait(30) == 0  # down stopped the running controller
    ctl.proc = None
    assert PinnedMaps.exists(ctl.pin_dir)
    assert cgroup_sockops(ctl.cgroup) == []

    # New connections are no longer accelerated.
    sockets_before = ctl.sockets()
    c2, s2 = connected_pair("127.0.0.1")
    assert ctl.sockets() == sockets_before
    assert ctl.counters()["inserted"] == before["inserted"]

    # The unread bytes survived, and the old connection keeps working.
    got = b""
    while len(got) < len(unread):
        got += server.recv(65536)
    assert got == unread
    stream = Stream(client, server).start()
    time.sleep(0.3)
    stream.finish()
    c2.close()
    s2.close()

    res = ctl.cli("down", "--json")
    assert '"removed": true' in res.stdout
    assert_nothing_left(ctl)
    assert not os.path.exists(ctl.state_dir)


def test_flow_growth_cap_sets_the_datapath_ceiling(fresh_env):
    ctl = fresh_env
    ctl.start("--flow-growth-cap", "1.5")
    with PinnedMaps(ctl.pin_dir) as maps:
        assert maps.flow_config().max_bound == int(1.5 * kernel.tcp_autotune_max())
    bad = ctl.cli("run", "--cgroup", ctl.cgroup, "--flow-growth-cap", "0.5", check=False)
    assert bad.returncode != 0 and "flow-growth-cap must be between 1 and 16" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    assert ctl.stop() == 0
