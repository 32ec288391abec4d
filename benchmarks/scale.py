"""The controller's cost against the node's size: N network namespaces, each
a "pod" with a veth on one bridge and its own address, then the real
`accel run` on a private cgroup, and what it costs:

- attach time (start to attached, with every namespace tracked);
- idle CPU of the controller over a quiet period (utime + stime);
- the time until an added pod's address is a local endpoint, and until a
  removed pod's is gone (the median of a few);
- the controller's RSS, descriptors and child processes;
- `accel status --json` and a metrics scrape.

    scripts/bench-scale                       # 100, 500 and 1,000 namespaces
    .venv/bin/python -m benchmarks.scale --sizes 100,250 --idle 20 --out DIR

Timings are measured, never asserted; the results go to DIR/scale.json and
DIR/scale.md (a table) and DIR/scale.png (a plot).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

import click

from accel.netns import namespace_paths
from accel.sandbox import Controller, exit_on_terminate, private_cgroup
from accel.sandbox.topology import FleetTopology

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return len(f.read().split())
    except OSError:
        return 0


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _wait(predicate: Any, timeout: float) -> float:
    """Seconds until ``predicate()`` holds (or ``timeout``, returned as is)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.005)
    return timeout


def measure(n: int, idle_s: float, probes: int, progress: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"namespaces": n}
    with private_cgroup("scale") as cg, FleetTopology(n, progress=progress) as fleet:
        ctl = Controller(cg, tempfile.mkdtemp(prefix="accel-scale-"), rescan_interval=1.0)
        try:
            progress(f"{n} namespaces: starting accel run")
            t0 = time.monotonic()
            ctl.start(wait=False)
            assert ctl.proc is not None
            pid = ctl.proc.pid
            ctl.wait_attached(timeout=600)
            row["attach_s"] = round(time.monotonic() - t0, 2)
            row["tracked"] = sum(1 for a in fleet.addresses if a in ctl.endpoints())
            progress(f"{n} namespaces: idle for {idle_s:.0f} s")
            c0, w0 = cpu_seconds(pid), time.monotonic()
            time.sleep(idle_s)
            row["idle_cpu_pct"] = round(100 * (cpu_seconds(pid) - c0) / (time.monotonic() - w0), 2)
            row["rss_mib"] = round(rss_mib(pid), 1)
            row["descriptors"] = descriptors(pid)
            row["child_processes"] = children(pid)
            # The backstop's full round, timed here with the controller's own code.
            t = time.monotonic()
            scanned = len(namespace_paths())
            row["full_scan_ms"] = round(1000 * (time.monotonic() - t), 1)
            row["full_scan_namespaces"] = scanned
            added, removed = [], []
            for i in range(probes):
                progress(f"{n} namespaces: add/remove probe {i + 1}/{probes}")
                addr = fleet.add_pod()
                added.append(_wait(lambda a=addr: a in ctl.endpoints(), 30))
                fleet.remove_pod(addr)
                removed.append(_wait(lambda a=addr: a not in ctl.endpoints(), 30))
            row["pod_added_visible_s"] = round(statistics.median(added), 3)
            row["pod_removed_gone_s"] = round(statistics.median(removed), 3)
            t = time.monotonic()
            ctl.cli("status", "--json")
            row["status_json_s"] = round(time.monotonic() - t, 3)
            with open(os.path.join(ctl.state_dir, "state.json")) as f:
                port = json.load(f)["metrics_port"]
            t = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                r.read()
            row["metrics_scrape_s"] = round(time.monotonic() - t, 3)
        finally:
            ctl.close()
    return row


COLUMNS = [
    ("namespaces", "namespaces"),
    ("attach_s", "attach (s)"),
    ("idle_cpu_pct", "idle CPU (% of a core)"),
    ("pod_added_visible_s", "added pod visible (s)"),
    ("pod_removed_gone_s", "removed pod gone (s)"),
    ("rss_mib", "RSS (MiB)"),
    ("descriptors", "descriptors"),
    ("child_processes", "child processes"),
    ("full_scan_ms", "full backstop scan (ms)"),
    ("status_json_s", "status --json (s)"),
    ("metrics_scrape_s", "metrics scrape (s)"),
]


def markdown(rows: list[dict[str, Any]], idle_s: float) -> str:
    head = "| " + " | ".join(c for _, c in COLUMNS) + " |"
    sep = "|" + "---:|" * len(COLUMNS)
    lines = [head, sep] + ["| " + " | ".join(str(r.get(k, "")) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + f"\n\nIdle CPU over {idle_s:.0f} s; pod times are medians of the probes; every namespace tracked in every run.\n"


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["namespaces"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, key, label in (
        (axes[0], "idle_cpu_pct", "idle CPU (% of a core)"),
        (axes[1], "attach_s", "attach (s)"),
        (axes[2], "pod_added_visible_s", "added pod visible (s)"),
    ):
        ax.plot(xs, [r[key] for r in rows], marker="o", color="#d62728")
        ax.set_xlabel("network namespaces")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.suptitle("accel controller cost against the number of namespaces")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--sizes", default="100,500,1000", show_default=True, help="Namespace counts, comma-separated.")
@click.option("--idle", "idle_s", type=float, default=60.0, show_default=True, help="Seconds of idle CPU measurement.")
@click.option("--probes", type=int, default=5, show_default=True, help="Pods added and removed per size.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Results directory [benchmarks/results/<UTC time>-scale].")
def main(sizes: str, idle_s: float, probes: int, out_dir: str | None) -> None:
    exit_on_terminate()  # SIGTERM/SIGHUP unwind: namespaces, cgroups and the controller are removed
    if os.geteuid() != 0:
        click.echo("benchmarks.scale: needs root (it makes namespaces and cgroups and runs the accelerator) - run it as root", err=True)
        sys.exit(77)
    try:
        counts = [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError:
        click.echo(f"benchmarks.scale: --sizes must be numbers separated by commas, got {sizes!r}", err=True)
        sys.exit(64)
    if not counts or min(counts) < 1 or max(counts) > 4000:
        click.echo("benchmarks.scale: each size must be between 1 and 4000", err=True)
        sys.exit(64)
    out_dir = out_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-scale")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for n in counts:
        rows.append(measure(n, idle_s, probes, lambda msg: click.echo(msg, err=True)))
        click.echo(json.dumps(rows[-1]), err=True)
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    with open(os.path.join(out_dir, "scale.json"), "w") as f:
        json.dump({"kernel": kernel, "idle_s": idle_s, "probes": probes, "rows": rows}, f, indent=1)
    with open(os.path.join(out_dir, "scale.md"), "w") as f:
        f.write(markdown(rows, idle_s))
    plot(rows, os.path.join(out_dir, "scale.png"))
    click.echo(markdown(rows, idle_s))
    click.echo(f"results: {out_dir}")


if __name__ == "__main__":
    main()
