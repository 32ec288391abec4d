"""Adding a program is a row of the table and its C file: the unchanged
lifecycle compiles it, attaches it in order, reports it, replaces it after a
crash, and detaches it on stop, beside the datapath's own programs."""

from __future__ import annotations

import errno
import logging
import os
import socket

import pytest

from accel import abi, control
from accel import log as logmod
from accel.datapath import Datapath
from accel.programs import CGROUP, PROGRAMS, Program, check_order
from accel.settings import Settings

from .traffic import connected_pair

EXTRA = Program(
    os.path.join(os.path.dirname(__file__), "bpf", "deny_port9.c"),
    "accel_test_deny9",
    abi.PROG_TYPE_CGROUP_SOCK_ADDR,
    abi.ATTACH_CGROUP_INET4_CONNECT,
    CGROUP,
    "test: connect4 refusing port 9",
)


def connect_errno(port: int) -> int:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex(("127.0.0.1", port))


def test_a_table_with_an_extra_row_runs_through_the_unchanged_lifecycle(fresh_env):
    table = (*PROGRAMS, EXTRA)
    settings = Settings(pin_dir=fresh_env.pin_dir, state_dir=fresh_env.state_dir, cgroup=fresh_env.cgroup, metrics_address=None)
    logmod.configure("console", level=logging.ERROR)
    dp = Datapath(settings, logmod.get("test"), table)
    try:
        assert connect_errno(9) == errno.ECONNREFUSED  # nothing listens on 9: before, a plain refusal
        attached = dp.start()
        assert attached is not None and set(attached.ids) == {p.entry for p in table}
        # The extra program runs: connect() to port 9 is refused by it...
        assert connect_errno(9) == errno.EPERM
        # ...beside the datapath, which still accelerates.
        before = fresh_env.counters()["redirected_bytes"]
        client, server = connected_pair("127.0.0.1")
        client.sendall(b"x" * 10000)
        got = b""
        while len(got) < 10000:
            got += server.recv(65536)
        client.close()
        server.close()
        assert fresh_env.counters()["redirected_bytes"] - before >= 10000
        # Status from the pins sees every cgroup row of the table attached.
        ours = control.attached(settings.pin_dir, settings.cgroup, table)
        assert ours == {"accel_sockops": [attached.ids["accel_sockops"]], "accel_test_deny9": [attached.ids["accel_test_deny9"]]}

        # A crashed run leaves its programs attached; the next start replaces
        # every row's, not only sockops'.
        crashed = attached.ids
        for item in dp._loaded:  # let go of the cgroup without detaching, as a SIGKILL would
            if item.target_fd is not None:
                os.close(item.target_fd)
                item.target_fd = None
        dp.stop()
        dp = Datapath(settings, logmod.get("test"), table)
        again = dp.start()
        assert again is not None
        now = control.attached(settings.pin_dir, settings.cgroup, table)
        assert now == {"accel_sockops": [again.ids["accel_sockops"]], "accel_test_deny9": [again.ids["accel_test_deny9"]]}
        assert not set(crashed.values()) & {i for ids in now.values() for i in ids}
        assert connect_errno(9) == errno.EPERM
    finally:
        dp.stop()
    # stop() detached every cgroup row: port 9 is plainly refused again.
    assert connect_errno(9) == errno.ECONNREFUSED
    assert control.attached(settings.pin_dir, settings.cgroup, table) == {"accel_sockops": [], "accel_test_deny9": []}
    assert control.remove_pins(settings) == 0


def test_the_table_refuses_a_map_program_after_a_cgroup_one():
    late = Program("redir.c", "accel_redir2", abi.PROG_TYPE_SK_MSG, abi.ATTACH_SK_MSG_VERDICT, "sock_hash", "misplaced")
    with pytest.raises(ValueError, match="invariant 6"):
        check_order((*PROGRAMS, late))
    check_order(PROGRAMS)  # the real table is in order
