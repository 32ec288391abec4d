"""Bad input and hostile conditions: one clear line, a non-zero exit, never a
traceback, and never a half-attached state."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from accel import kernel
from accel.sandbox import ACCEL, scratch

from . import hostile
from .test_lifecycle import cgroup_sockops


def run_accel(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([ACCEL, *args], capture_output=True, text=True, timeout=180, **kw)


def assert_clean_error(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode != 0
    err = res.stderr
    assert "Traceback" not in err and "Traceback" not in res.stdout, err
    # Log lines may come first (run logs as it goes); the error is one line of its own.
    assert err.startswith("accel: ") or "\naccel: " in err, err
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"


def private_args(ctl) -> list[str]:
    return ["--pin-dir", ctl.pin_dir, "--state-dir", ctl.state_dir]


NOT_ROOT_COMMANDS = (["status"], ["conns"], ["down"], ["run"])


def test_not_root(fresh_env):
    def drop() -> None:
        os.setgid(65534)
        os.setuid(65534)

    probe = subprocess.run([ACCEL, "--version"], preexec_fn=drop, cwd="/", capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("this checkout is not readable by uid 65534 (covered by the capability test below)")
    for cmd in NOT_ROOT_COMMANDS:
        args = [*cmd, "--cgroup", fresh_env.cgroup] if cmd == ["run"] else cmd
        res = run_accel(*private_args(fresh_env), *args, preexec_fn=drop, cwd="/")
        assert_clean_error(res, "needs root", "sudo")
        assert res.returncode == 77


def test_root_without_capabilities(fresh_env):
    """uid 0 with an empty capability set (a locked-down container)."""
    for cmd in NOT_ROOT_COMMANDS:
        args = [*cmd, "--cgroup", fresh_env.cgroup] if cmd == ["run"] else cmd
        res = subprocess.run(["setpriv", "--bounding-set=-all", "--", ACCEL, *private_args(fresh_env), *args], capture_output=True, text=True, timeout=60)
        assert_clean_error(res, "needs root", "CAP_BPF")
        assert res.returncode == 77
    assert not os.path.exists(fresh_env.pin_dir)


def test_cgroup_that_does_not_exist(fresh_env):
    res = run_accel(*private_args(fresh_env), "run", "--cgroup", fresh_env.cgroup + "-missing")
    assert_clean_error(res, "does not exist")


def test_cgroup_that_is_a_file(fresh_env, tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    res = run_accel(*private_args(fresh_env), "run", "--cgroup", str(f))
    assert_clean_error(res, "not a directory")


def test_cgroup_that_is_not_cgroup_v2(fresh_env, tmp_path):
    res = run_accel(*private_args(fresh_env), "run", "--cgroup", str(tmp_path))
    assert_clean_error(res, "not on a cgroup-v2 filesystem")
    v1 = "/sys/fs/cgroup/cpu"
    if os.path.isdir(v1):
        assert_clean_error(run_accel(*private_args(fresh_env), "run", "--cgroup", v1), "not on a cgroup-v2 filesystem")


def test_pin_dir_not_on_bpffs(fresh_env, tmp_path):
    res = run_accel("--pin-dir", str(tmp_path / "pins"), "--state-dir", fresh_env.state_dir, "run", "--cgroup", fresh_env.cgroup)
    assert_clean_error(res, "not on a bpf filesystem")


@pytest.mark.parametrize("size", ["-1", "0", "99999999999", "lots"])
def test_bad_map_size(fresh_env, size):
    res = run_accel(*private_args(fresh_env), "run", "--cgroup", fresh_env.cgroup, "--sockhash-size", size)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "sockhash-size" in res.stderr


@pytest.mark.skipif(not hostile.SUPPORTED, reason="the seccomp filter is written for x86_64")
def test_bpffs_that_cannot_be_mounted(fresh_env):
    """No bpffs at /sys/fs/bpf and mount(2) refused, as in a container with
    the runtime's default seccomp profile: one line naming the step and the
    fix, and nothing attached."""
    ctl = fresh_env
    pin_dir = f"{kernel.DEFAULT_BPFFS}/{scratch('pins')}"
    res = run_accel("--pin-dir", pin_dir, "--state-dir", ctl.state_dir, "run", "--cgroup", ctl.cgroup, preexec_fn=hostile.no_bpffs_and_no_mount)
    assert_clean_error(res, f"mount bpffs at {kernel.DEFAULT_BPFFS}", "Operation not permitted", "mount it from the host")
    assert res.returncode == 69
    assert not os.path.exists(pin_dir)
    assert cgroup_sockops(ctl.cgroup) == []


# A kernel without one of the features: the real CLI, with one probe replaced
# by one this kernel really fails (a helper id no kernel has; the verifier
# answers "invalid func"), so the verdict comes from the kernel, not from us.
LACKING_KERNEL = """
import sys
from accel import abi, cli, kernel, libbpf
i = [f.name for f in kernel.FEATURES].index(sys.argv.pop(1))
kernel.FEATURES[i] = kernel.Feature(kernel.FEATURES[i].name, lambda: libbpf.probe_helper(abi.PROG_TYPE_SK_MSG, 9999), kernel.FEATURES[i].fix)
sys.argv[0] = "accel"
cli.main()
"""


@pytest.mark.parametrize(
    ("feature", "fix"),
    [("sockhash map", "CONFIG_BPF_STREAM_PARSER"), ("netns cookie helper (sockops, sk_msg)", "bpf_get_netns_cookie in sockops and sk_msg")],
)
def test_kernel_without_a_feature(fresh_env, feature, fix):
    ctl = fresh_env
    lacking = [sys.executable, "-c", LACKING_KERNEL, feature, *private_args(ctl)]
    res = subprocess.run([*lacking, "run", "--cgroup", ctl.cgroup], capture_output=True, text=True, timeout=60)
    assert_clean_error(res, f"missing {feature} (needs", fix, "accel doctor")
    assert res.returncode == 69
    assert not os.path.exists(ctl.pin_dir)
    assert cgroup_sockops(ctl.cgroup) == []
    res = subprocess.run([*lacking, "doctor", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks[feature]["ok"] is False and fix in checks[feature]["fix"]
    assert [name for name, c in checks.items() if not c["ok"]] == [feature]


def test_verifier_rejection_shows_the_log_and_leaves_nothing(fresh_env):
    ctl = fresh_env
    res = run_accel(*private_args(ctl), "run", "--cgroup", ctl.cgroup, "--bpf-define", "ACCEL_TEST_VERIFIER_REJECT")
    assert_clean_error(res, "load accel_sockops", "kernel rejected it", "verifier log")
    assert res.returncode == 70
    # The tail of the kernel's own log, not just our words.
    assert "invalid bpf_context access" in res.stderr or "off=4096" in res.stderr, res.stderr
    assert not os.path.exists(ctl.pin_dir)
    assert cgroup_sockops(ctl.cgroup) == []


def test_second_run_is_refused_naming_the_holder(fresh_env):
    ctl = fresh_env
    ctl.start()
    res = run_accel(*private_args(ctl), "run", "--cgroup", ctl.cgroup)
    assert_clean_error(res, f"pid {ctl.proc.pid}", "holds")
    assert res.returncode == 75
    assert ctl.proc.poll() is None  # the first one is unharmed
    assert len(cgroup_sockops(ctl.cgroup)) == 1


def test_down_with_nothing_running(fresh_env):
    res = run_accel(*private_args(fresh_env), "down")
    assert res.returncode == 0, res.stderr
    res = run_accel(*private_args(fresh_env), "conns")
    assert_clean_error(res, "nothing pinned")


def test_bpf_refused_in_a_user_namespace(fresh_env):
    """Root inside a user namespace (a rootless container) is refused BPF by
    the kernel: the error says so instead of blaming the kernel's features."""
    cmd = ["unshare", "--user", "--map-root-user", ACCEL, *private_args(fresh_env)]
    res = subprocess.run([*cmd, "run", "--cgroup", fresh_env.cgroup], capture_output=True, text=True, timeout=60)
    assert_clean_error(res, "BPF is not permitted", "CAP_BPF")
    assert res.returncode == 77
    res = subprocess.run([*cmd, "doctor", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks["BPF syscall"]["ok"] is False and "not permitted" in checks["BPF syscall"]["detail"]
    res = subprocess.run([*cmd, "doctor", "--live", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    live = {c["name"]: c for c in json.loads(res.stdout)["checks"]}["live: datapath"]
    assert live["ok"] is False and "fix the failures above" in live["fix"]
    assert not os.path.exists(fresh_env.pin_dir)


def test_doctor_passes_here_and_names_the_headers():
    res = run_accel("doctor", "--json")
    assert res.returncode == 0, res.stdout
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert all(c["ok"] for c in checks.values())
    assert "headers" in checks["kernel headers"]["detail"]
    # A kernel without the sockmap data-loss fixes is a warning (6.18 has them).
    fixes = checks["sockmap data-loss fixes"]
    fixed, why = kernel.sockmap_fixes(kernel.upstream_version())
    assert fixes["ok"] and fixes["warning"] is (fixed is not True)
    assert why in (fixes["detail"], fixes["fix"])
