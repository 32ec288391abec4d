"""Fixtures for the privileged tests: real programs, real kernel, private
cgroup, private namespaces and pins; everything removed even on failure."""

from __future__ import annotations

import contextlib
import os

import pytest

from .cgroups import inside, private_cgroup
from .controller import Controller


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: loads BPF programs and makes cgroups and namespaces")
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's outcome on the item, so fixtures can tell a failure."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request) -> bool:
    return any(getattr(getattr(request.node, "rep_" + w, None), "failed", False) for w in ("setup", "call"))


@pytest.fixture(scope="module")
def accel_env(tmp_path_factory):
    """One controller on a private cgroup for a module's tests, with this
    process inside the cgroup so that the tests' sockets are accelerated."""
    with private_cgroup("mod") as cg:
        ctl = Controller(cg, tmp_path_factory.mktemp("state"))
        try:
            ctl.start()
            with inside(cg):
                yield ctl
        finally:
            ctl.close()


@pytest.fixture(autouse=True)
def _module_controller_log_on_failure(request):
    """A failed test that used the module's controller shows that log too."""
    yield
    if "accel_env" in request.fixturenames and _failed(request):
        ctl = request.getfixturevalue("accel_env")
        print(f"--- accel run log (last 5000 chars) ---\n{ctl.log()}")


@pytest.fixture
def fresh_env(tmp_path, request):
    """A controller of the test's own (not started): lifecycle tests drive it.
    When the test fails, the controller's own log is printed with the report."""
    with private_cgroup("fn") as cg:
        ctl = Controller(cg, tmp_path / "state")
        try:
            with inside(cg):
                yield ctl
        finally:
            ctl.close()
            if _failed(request):
                print(f"--- accel run log (last 5000 chars) ---\n{ctl.log()}")


@pytest.fixture(scope="session", autouse=True)
def _sweep_leftovers():
    """Belt and braces: whatever a crashed test left (namespaces, pins,
    cgroups with our test prefixes) is removed at the end of the session."""
    yield
    if os.geteuid() != 0:
        return
    import shutil

    from accel.kernel import mounts
    from tests.netns_topology import remove_netns

    for run_dir in ("/run/netns",):
        if os.path.isdir(run_dir):
            for name in os.listdir(run_dir):
                if name.startswith("acct-"):
                    remove_netns(name)
    if os.path.isdir("/sys/fs/bpf"):
        for name in os.listdir("/sys/fs/bpf"):
            if name.startswith("accel-test-"):
                shutil.rmtree(os.path.join("/sys/fs/bpf", name), ignore_errors=True)
    for root in mounts("cgroup2"):
        for name in os.listdir(root):
            if name.startswith("accel-test-"):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(root, name))
