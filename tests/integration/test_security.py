"""Who can see or change the datapath: the pins are root's alone, and a user
without privileges can neither read the connection table nor write the
endpoint map, through the CLI or around it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from accel.sandbox import ACCEL


def test_pins_are_root_only(accel_env):
    st = os.stat(accel_env.pin_dir)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700
    names = sorted(os.listdir(accel_env.pin_dir))
    assert {"sock_hash", "endpoints", "stats"} <= set(names)
    for name in names:
        st = os.stat(os.path.join(accel_env.pin_dir, name))
        assert st.st_uid == 0, name
        assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{name} is {oct(st.st_mode)}"


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


OPEN_PIN = """
import sys
from accel import libbpf
try:
    libbpf.obj_get(sys.argv[1])
except OSError as e:
    print(e.errno)
else:
    print("opened")
"""


def test_unprivileged_user_cannot_open_the_maps(accel_env):
    probe = subprocess.run([sys.executable, "-c", "import accel"], preexec_fn=_as_nobody, cwd="/", capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("this checkout is not readable by uid 65534")
    for name in ("sock_hash", "endpoints"):
        res = subprocess.run(
            [sys.executable, "-c", OPEN_PIN, os.path.join(accel_env.pin_dir, name)], preexec_fn=_as_nobody, cwd="/", capture_output=True, text=True, timeout=60
        )
        assert res.stdout.strip() in ("1", "13"), (name, res.stdout, res.stderr)  # EPERM or EACCES, never "opened"
    # And the CLI says why instead of failing obscurely.
    res = subprocess.run(
        [ACCEL, "--pin-dir", accel_env.pin_dir, "--state-dir", accel_env.state_dir, "conns"], preexec_fn=_as_nobody, cwd="/", capture_output=True, text=True
    )
    assert res.returncode == 77 and "root-only" in res.stderr and "Traceback" not in res.stderr
