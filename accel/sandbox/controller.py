"""A private accel instance: the real `accel` command in a subprocess, as a
user would run it, with pins and state of its own, taken down (`accel down
--force`) and removed whatever happens."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ..kernel import DEFAULT_BPFFS
from ..maps import PinnedMaps
from .names import scratch

# The `accel` command beside this interpreter (the venv's).
ACCEL = os.path.join(os.path.dirname(sys.executable), "accel")


class Controller:
    def __init__(self, cgroup: str, state_dir: Path | str, pin_dir: str | None = None, rescan_interval: float = 0.2) -> None:
        self.cgroup = cgroup
        self.rescan_interval = rescan_interval  # tests: fast; benchmarks: the default, less noise
        self.state_dir = str(state_dir)
        self.pin_dir = pin_dir or os.path.join(DEFAULT_BPFFS, scratch("pins"))
        self.proc: subprocess.Popen | None = None
        # Options every start of this instance gets (the torture suite's
        # --accel-arg), before the ones a start names itself.
        self.always: tuple[str, ...] = ()
        self.log_path = os.path.join(os.path.dirname(self.state_dir.rstrip("/")), f"accel-run-{uuid.uuid4().hex[:6]}.log")

    # --- the CLI -------------------------------------------------------------
    def base_args(self) -> list[str]:
        return [ACCEL, "--pin-dir", self.pin_dir, "--state-dir", self.state_dir]

    def cli(self, *args: str, check: bool = True, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess:
        res = subprocess.run([*self.base_args(), *args], capture_output=True, text=True, timeout=timeout, **kw)
        if check and res.returncode != 0:
            raise AssertionError(f"accel {' '.join(args)} exited {res.returncode}: {res.stderr}{res.stdout}")
        return res

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json").stdout)

    def run_args(self, *extra: str) -> list[str]:
        return [
            *self.base_args(),
            "run",
            "--cgroup",
            self.cgroup,
            "--rescan-interval",
            str(self.rescan_interval),
            "--log-format",
            "json",
            "--metrics-address",
            "127.0.0.1:0",
            *self.always,
            *extra,
        ]

    def start(self, *extra: str, wait: bool = True) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.run_args(*extra), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_attached()

    def wait_attached(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None, "start() first"
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"accel run exited {self.proc.returncode}:\n{self.log_tail()}")
            if PinnedMaps.exists(self.pin_dir):
                # status may fail while the controller is still replacing
                # pins of another version (test_upgrade): keep polling.
                res = self.cli("status", "--json", check=False)
                last = res.stderr
                if res.returncode == 0:
                    st = json.loads(res.stdout)
                    run = st["run_state"]
                    if st["running_pid"] == self.proc.pid and run["pid"] == self.proc.pid and run["sockops_id"] in st["sockops_ids"]:
                        return
            time.sleep(0.1)
        raise AssertionError(f"accel run did not attach within {timeout}s (last status: {last}):\n{self.log_tail()}")

    def log(self) -> str:
        """The whole log: tests look for lines in it, and a busy machine (many
        namespaces to watch) can push the line they want out of any tail."""
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 5000) -> str:
        """The end of the log, for a failure message."""
        return self.log()[-chars:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.proc = None
        return rc

    # --- kernel state, read directly --------------------------------------------
    def sockets(self) -> set[tuple]:
        if not PinnedMaps.exists(self.pin_dir):
            return set()
        with PinnedMaps(self.pin_dir) as maps:
            return {e.tuple() for e in maps.sockets()}

    def endpoints(self) -> dict[str, int]:
        with PinnedMaps(self.pin_dir) as maps:
            return {a: v.policy for a, v in maps.endpoints().items()}

    def wait_endpoints(self, *addrs: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            eps = self.endpoints()
            if all(a in eps for a in addrs):
                return
            time.sleep(0.05)
        raise AssertionError(f"endpoints {addrs} not in the map after {timeout}s: {sorted(self.endpoints())}")

    def counters(self) -> dict[str, int]:
        with PinnedMaps(self.pin_dir) as maps:
            return maps.stats()

    # --- teardown ------------------------------------------------------------------
    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # Whatever happened, leave nothing attached or pinned.
        self.cli("down", "--force", "--cgroup", self.cgroup, check=False)
        if os.path.isdir(self.pin_dir):
            for name in os.listdir(self.pin_dir):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.pin_dir, name))
            with contextlib.suppress(OSError):
                os.rmdir(self.pin_dir)
