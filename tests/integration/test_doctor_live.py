"""`accel doctor --live`: the real datapath end to end in a scratch cgroup,
reporting which kernel limits apply, and leaving nothing behind."""

from __future__ import annotations

import glob
import json
import os
import subprocess

from accel import kernel
from accel.sandbox import ACCEL

from .test_lifecycle import cgroup_sockops

LIVE_CHECKS = {
    "live: load and attach",
    "live: redirect, loopback, 4 MiB each way",
    "live: order at connection start",
    "live: FIONREAD",
    "live: splice()",
    "live: stop keeps live connections",
    "live: clean up",
}


def doctor_live(parent: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    res = subprocess.run([ACCEL, "doctor", "--live", "--live-parent", parent, "--json"], capture_output=True, text=True, timeout=180)
    assert "Traceback" not in res.stderr, res.stderr
    return res, {c["name"]: c for c in json.loads(res.stdout)["checks"]}


def scratch_leftovers(parent: str) -> list[str]:
    return glob.glob(os.path.join(parent, "accel-sbx-*-selftest")) + glob.glob(os.path.join(kernel.DEFAULT_BPFFS, "accel-sbx-*-selftest"))


def test_live_doctor_runs_the_datapath_and_leaves_nothing(fresh_env):
    res, checks = doctor_live(fresh_env.cgroup)
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(checks) >= LIVE_CHECKS, set(checks)
    failed = [name for name, c in checks.items() if not c["ok"]]
    assert failed == []
    assert "redirected 8,388,608 of 8,388,608 bytes" in checks["live: redirect, loopback, 4 MiB each way"]["detail"]
    assert checks["live: order at connection start"]["detail"].startswith("100/100")
    assert "new connections inserted: 0" in checks["live: stop keeps live connections"]["detail"]
    # What the kernel does is reported, and a known limit is a warning, not a pass.
    splice = checks["live: splice()"]
    assert splice["warning"] is ("splice sees redirected bytes" not in splice["detail"])
    assert scratch_leftovers(fresh_env.cgroup) == []
    assert cgroup_sockops(fresh_env.cgroup) == []


def test_live_doctor_steps_aside_for_a_running_instance(fresh_env):
    """Under a cgroup where accel already runs, the instance's programs would
    take the scratch sockets: the live test must say so and touch nothing."""
    ctl = fresh_env
    ctl.start()
    before = ctl.counters()
    ids = cgroup_sockops(ctl.cgroup)
    res, checks = doctor_live(ctl.cgroup)
    assert res.returncode == 0, res.stdout + res.stderr
    skipped = checks["live: datapath"]
    assert skipped["warning"] and "not run" in skipped["detail"] and str(ids[0]) in skipped["detail"]
    assert "live: load and attach" not in checks
    assert checks["live: clean up"]["ok"]
    assert ctl.counters()["inserted"] == before["inserted"]
    assert cgroup_sockops(ctl.cgroup) == ids
    assert scratch_leftovers(ctl.cgroup) == []
