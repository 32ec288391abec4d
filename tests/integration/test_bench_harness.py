"""The benchmark harness end to end on its tiny profile: the real controller,
real tools, a results directory with raw JSON, a report and plots, and proof
that the accelerated mode was accelerated. No timing is asserted."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.timeout(600)
def test_tiny_profile_produces_results_and_really_accelerates(tmp_path):
    out = tmp_path / "results"
    res = subprocess.run([sys.executable, "-m", "benchmarks", "--tiny", "--out", str(out)], capture_output=True, text=True, timeout=580)
    assert res.returncode == 0, f"harness exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    raw = json.loads((out / "raw.json").read_text())
    rows = raw["measurements"]
    assert rows and not [r for r in rows if r.get("error")]
    modes = {r["mode"] for r in rows}
    assert modes == {"plain", "accel", "unix"}
    for r in rows:
        if r["mode"] == "accel":
            assert r["redirected_bytes"] > 0, r
        else:
            assert r["redirected_bytes"] == 0, r
    stream = [r for r in rows if r["name"] == "iperf3" and r["mode"] == "accel" and r["topology"] == "pods"]
    # Cross-check: the kernel counted at least the bytes iperf3 says it sent.
    assert stream and stream[0]["coverage"] >= 0.9
    assert {"kernel", "cpu_model", "cores", "tools"} <= set(raw["machine"])
    assert "pinned" in raw["placement"]
    md = (out / "report.md").read_text()
    assert "## pods" in md and "## sidecar" in md and "accel / plain" in md
    pngs = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert "throughput_pods.png" in pngs and "latency_pods.png" in pngs
    for p in pngs:
        assert (out / p).stat().st_size > 1000


@pytest.mark.timeout(300)
def test_wait_cost_pairs_plain_and_accelerated_runs_and_reads_tcps_counters():
    """benchmarks/wait_cost.py end to end, one short pair at a ceiling of 1x:
    both runs measured, the accelerated one accounted for (its waits and the
    pods' TCP counters are read), everything removed afterwards. No timing
    is asserted."""
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.wait_cost", "--pairs", "1", "--seconds", "1", "--accel-arg=--flow-growth-cap=1"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert res.returncode == 0, f"wait_cost exited {res.returncode}:\n{res.stderr[-3000:]}"
    out = json.loads(res.stdout)
    (pair,) = out["pairs"]
    assert pair["plain_gbit_s"] > 0 and pair["accel_gbit_s"] > 0
    assert pair["waits"] >= pair["returns"] >= 0 and pair["waited_ms"] >= 0
    assert isinstance(pair["receiver"], dict) and isinstance(pair["sender"], dict)
    assert out["summary"]["accel_args"] == ["--flow-growth-cap=1"]
    assert "pair 0: plain" in res.stderr
    assert not [n for n in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout.split() if "waitcost" in n]


@pytest.mark.timeout(300)
def test_crossover_measures_redirect_itself_and_names_the_flags(tmp_path):
    """benchmarks/crossover.py end to end at one size, once: both paths
    measured with the small-write rule off (64 B writes, which the rule would
    move to TCP, stay redirected), a limit per path, and the `accel run`
    flags printed. Which limit comes out is the machine's, not asserted."""
    out = tmp_path / "crossover"
    argv = [sys.executable, "-m", "benchmarks.crossover", "--sizes", "64", "--seconds", "0.5", "--repeats", "1", "--json", "--out", str(out)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=280)
    assert res.returncode == 0, f"crossover exited {res.returncode}:\n{res.stderr[-3000:]}"
    result = json.loads(res.stdout)
    assert set(result["limits"]) == {"small-write-local", "small-write-remote"}
    assert all(v in (64, 128) for v in result["limits"].values())  # the one size, or twice it
    raw = json.loads((out / "raw.json").read_text())
    assert "--no-small-write-fallback" in raw["accel_args"]
    accel = [m for m in raw["measurements"] if m["mode"] == "accel"]
    # With the rule on, a 64 B stream is nearly all TCP (0-0.1% redirected).
    assert len(accel) == 4 and all(m["coverage"] >= 0.9 for m in accel), accel
    assert json.loads((out / "crossover.json").read_text())["limits"] == result["limits"]
    bad = subprocess.run([sys.executable, "-m", "benchmarks.crossover", "--sizes", "4096,1024"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "ascending" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.timeout(300)
def test_noise_runs_plain_tcp_against_itself(tmp_path):
    """benchmarks/noise.py end to end on the tiny profile, once: every
    measurement is plain TCP (nothing redirected, in either mode), each cell
    gets an again/plain ratio, and the summary counts the cells the bar
    applies to. Which ratios come out is the machine's, not asserted."""
    out = tmp_path / "noise"
    argv = [sys.executable, "-m", "benchmarks.noise", "--profile", "tiny", "--seconds", "0.5", "--repeats", "1", "--json", "--out", str(out)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=280)
    assert res.returncode == 0, f"noise exited {res.returncode}:\n{res.stderr[-3000:]}"
    result = json.loads(res.stdout)
    raw = json.loads((out / "raw.json").read_text())
    assert {m["mode"] for m in raw["measurements"]} == {"plain", "again"}
    assert all(m["redirected_bytes"] == 0 and not m.get("error") for m in raw["measurements"])
    names = {c["cell"] for c in result["cells"]}
    assert {"pods/stream 16 KiB x1", "pods/ping-pong 64 B p50", "sidecar/stream 64 KiB x1"} <= names
    assert all(c["ratio"] > 0 and len(c["pairs"]) == 1 for c in result["cells"])
    # Three cells are in the bar: two streams and the p50 (not the tails).
    assert result["summary"]["cells"] == 3
    assert "Plain TCP against itself" in (out / "noise.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "benchmarks.noise", "--only", "no-such-cell"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no cell" in bad.stderr and "Traceback" not in bad.stderr
    # An earlier noise run is read again without measuring; a directory that
    # holds no harness result is refused with what to give instead.
    again = subprocess.run([sys.executable, "-m", "benchmarks.noise", "--noise-from", str(out), "--json"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and json.loads(again.stdout)["cells"] == result["cells"]
    empty = subprocess.run([sys.executable, "-m", "benchmarks.noise", "--noise-from", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert empty.returncode == 2 and "raw.json" in empty.stderr and "Traceback" not in empty.stderr


def _made_by(pid: int) -> list[str]:
    """What a sandbox made by ``pid`` still has on this node: namespaces,
    cgroups, pin directories, and processes (the controller) using its pins."""
    left = [n for n in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout.split() if n.startswith(f"sbx{pid}-")]
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup", "/sys/fs/bpf"):
        with contextlib.suppress(OSError):
            left += [os.path.join(root, n) for n in os.listdir(root) if n.startswith(f"accel-sbx-{pid}-")]
    for proc in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if proc.isdigit() and f"accel-sbx-{pid}-".encode() in pathlib.Path(f"/proc/{proc}/cmdline").read_bytes():
                left.append(f"process {proc}")
    return left


@pytest.mark.timeout(300)
def test_a_benchmark_stopped_with_sigterm_removes_what_it_made(tmp_path):
    """`kill` on a running benchmark unwinds it as Ctrl-C does: its
    namespaces, cgroups, pins and its controller are gone afterwards (Python's
    default for SIGTERM would leave all of them, the controller attached)."""
    argv = [sys.executable, "-m", "benchmarks.noise", "--profile", "tiny", "--seconds", "5", "--out", str(tmp_path / "noise")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # Wait until the topology and the controller exist, and a measurement runs.
        while time.monotonic() < deadline and not any(p.startswith("process") for p in _made_by(proc.pid)):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        made = _made_by(proc.pid)
        assert any(p.startswith("sbx") for p in made) and any(p.startswith("process") for p in made), made
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert _made_by(proc.pid) == []
