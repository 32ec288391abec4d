"""exit_on_terminate (accel/sandbox/signals.py): SIGTERM unwinds the process
that asked for it, and only that process. A child forked from it (as
pyroute2 forks one per namespace handle and ends it with SIGTERM) must die
of the signal without running the parent's clean-up: that clean-up, run
from the child, removed the parent's cgroup in CI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

# Runs in its own interpreter: the handler must not touch pytest's process.
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from accel.sandbox import exit_on_terminate

    exit_on_terminate()
    marker = sys.argv[1]
    try:
        pid = os.fork()
        if pid == 0:  # the child: told to stop while the parent's stack is its too
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(status, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # the maker itself: it unwinds
        time.sleep(10)
    finally:
        with open(marker, "a") as f:
            f.write(f"clean-up by {os.getpid()}\\n")
    """
)


def test_sigterm_unwinds_the_maker_and_not_a_forked_child(tmp_path):
    marker = tmp_path / "cleanup"
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(marker)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 128 + signal.SIGTERM, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    status = int(res.stdout.split()[0])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, f"the child did not die of SIGTERM: wait status {status}"
    lines = marker.read_text().splitlines()
    assert len(lines) == 1, f"the clean-up ran more than once (a child ran the parent's): {lines}"
