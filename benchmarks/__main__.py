"""python -m benchmarks [--quick | --full | --long] [--out DIR] [--no-pin]

Runs plain TCP, accelerated and AF_UNIX side by side through the real `accel`
controller and writes a results directory: raw.json (every repeat), report.md
and PNG plots. Exit 1 when a measurement failed (the report says which).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import click
from rich.console import Console

from accel.sandbox import exit_on_terminate

from . import bar, harness, report
from .profiles import PROFILES

HERE = os.path.dirname(os.path.abspath(__file__))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", "profile", flag_value="quick", help="Smoke profile, under 2 minutes.")
@click.option("--full", "profile", flag_value="full", default=True, help="Every workload and size, 5 repeats (about 30 minutes).")
@click.option("--long", "profile", flag_value="long", help="The bulk stream cells at 10 s, 7 repeats (about 20 minutes).")
@click.option("--tiny", "profile", flag_value="tiny", hidden=True, help="The harness's own test.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Results directory [benchmarks/results/<UTC time>-<profile>].")
@click.option("--pin/--no-pin", default=True, show_default=True, help="Pin client to CPU 0 and server to CPU 1.")
@click.option("--only", "only", multiple=True, help="Run only workloads whose key (topology/kind/label) contains this text.")
@click.option("--report-only", type=click.Path(exists=True, file_okay=False), help="Rebuild report.md and plots from DIR/raw.json.")
@click.option(
    "--accel-arg",
    "accel_args",
    multiple=True,
    help="Pass this option to `accel run` (repeat for more), e.g. --accel-arg=--node-tcp-budget=268435456.",
)
@click.option("--seconds", type=click.FloatRange(0.5, 600), default=None, help="Seconds per measurement, instead of the profile's.")
@click.option("--repeats", type=click.IntRange(1, 100), default=None, help="Repeats per cell, instead of the profile's.")
@click.option(
    "--program-cost",
    is_flag=True,
    help="Also measure what each BPF program costs per run (kernel run-time statistics: they slow every run a little, so compare such runs with each other).",
)
def main(
    profile: str,
    out_dir: str | None,
    pin: bool,
    only: tuple[str, ...],
    report_only: str | None,
    accel_args: tuple[str, ...],
    seconds: float | None,
    repeats: int | None,
    program_cost: bool,
) -> None:
    exit_on_terminate()  # SIGTERM/SIGHUP unwind: namespaces, cgroups and the controller are removed
    console = Console(stderr=True)
    if report_only:
        with open(os.path.join(report_only, "raw.json")) as f:
            md, _ = report.write(json.load(f), report_only)
        console.print(f"report: {md}")
        return
    if os.geteuid() != 0:
        console.print("benchmarks: needs root (it runs the accelerator and makes namespaces and cgroups) - run it as root: scripts/bench")
        sys.exit(77)
    prof = PROFILES[profile]()
    if seconds is not None:
        prof.settings = dataclasses.replace(prof.settings, seconds=seconds)
    if repeats is not None:
        prof.repeats = repeats
    if only:
        prof.workloads = [w for w in prof.workloads if any(o in w.key for o in only)]
        if not prof.workloads:
            console.print(f"benchmarks: no workload matches {' or '.join(only)}; keys look like 'pods/iperf3/stream 16 KiB x1'")
            sys.exit(64)
        prof.topologies = tuple(t for t in prof.topologies if any(w.topology == t for w in prof.workloads))
    out_dir = out_dir or os.path.join(HERE, "results", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{prof.name}")
    try:
        raw = bar.run(console, prof, pin, accel_args, program_cost)
    except harness.HarnessError as exc:
        console.print(f"benchmarks: {exc}")
        sys.exit(69)
    md, pngs = report.write(raw, out_dir)
    failed = [m for m in raw["measurements"] if m.get("error")]
    with open(md) as f:
        console.print(f.read().split("## Plots")[0])
    console.print(f"results: {out_dir} (raw.json, report.md, {len(pngs)} plots); {len(raw['measurements'])} measurements, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
