"""Fixtures for the privileged tests: real programs, real kernel, private
cgroup, private namespaces and pins; everything removed even on failure."""

from __future__ import annotations

import os

import pytest

from accel.sandbox import Controller, inside, private_cgroup, sweep


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
        print(f"--- accel run log (last 5000 chars) ---\n{ctl.log_tail()}")


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
                print(f"--- accel run log (last 5000 chars) ---\n{ctl.log_tail()}")


@pytest.fixture(scope="session", autouse=True)
def _sweep_leftovers():
    """Belt and braces: what a crashed test of this session left (namespaces,
    pins, cgroups), and what earlier crashed runs left, is removed at the
    end; a sandbox whose maker still runs (a soak beside the tests) is left
    alone."""
    yield
    if os.geteuid() == 0:
        sweep(mine=True)
