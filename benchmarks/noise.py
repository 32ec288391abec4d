"""How far plain TCP is from itself on this host: the benchmark's noise floor.

A benchmark bar such as "no cell below 0.95x of plain TCP" only means
something if the harness can tell 0.95x from 1.0x. This runs a profile's
cells as the harness does (same topologies, pinning, interleaving, repeats),
but both modes of each pair are plain TCP: "plain" and "again", in the same
cgroup without programs. Each cell's ratio is again/plain computed exactly
as the report computes accel/plain (the ratio of the two modes' medians),
so a cell that misses the bar here missed it by chance alone.

A cell misses the bar when its ratio is below 1 - 5% (throughput, rates),
or above 1 + 5% for latency p50; the tails (p99, p99.9) are shown but are
not part of the bar. Since which of the two modes is called "plain" is
arbitrary, the symmetric count (a ratio outside 0.95-1.05x either way) is
shown too: it is how often a datapath exactly as fast as TCP would miss the
bar in a run of this length.

    python -m benchmarks.noise [--profile full] [--only TEXT] [--seconds S] [--repeats N] [--out DIR] [--json]
    python -m benchmarks.noise --noise-from NOISE_DIR --judge RUN_DIR [--judge RUN_DIR2]

With --judge, each cell that lost in a benchmark run is set against its
noise: it "loses beyond noise" in a run when it lost by more than the bar
or than plain TCP differed from itself in that cell, whichever is larger.

Root only; the full profile without AF_UNIX takes about 25 minutes.
Results directory as for `python -m benchmarks`, plus noise.json and noise.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console

from accel.sandbox import exit_on_terminate

from . import bar, harness, report
from .profiles import PROFILES, Profile

HERE = os.path.dirname(os.path.abspath(__file__))
AGAIN = "again"  # the second plain TCP measurement of each pair
BAR = 0.05  # the bar: no cell below 0.95x, no latency p50 above 1.05x


@dataclass(frozen=True)
class CellNoise:
    cell: str  # "<topology>/<workload>", as in the report
    metric: str
    higher_is_better: bool
    in_bar: bool  # the bar applies to this row (not to latency tails)
    ratio: float  # again / plain, of the medians
    worst: float  # the pair furthest from 1 in the losing direction
    pairs: list[float]

    @property
    def misses_bar(self) -> bool:
        return self.in_bar and ((self.ratio < 1 - BAR) if self.higher_is_better else (self.ratio > 1 + BAR))

    @property
    def outside_band(self) -> bool:
        return self.in_bar and abs(self.ratio - 1) > BAR


def profile(base: str) -> Profile:
    """The base profile's cells with both modes plain TCP."""
    prof = PROFILES[base]()
    prof.workloads = [dataclasses.replace(w, modes=("plain", AGAIN)) for w in prof.workloads]
    prof.name = f"noise-{base}"
    return prof


def in_bar(row: dict[str, Any]) -> bool:
    """The bar applies to a report row: throughput and rates, latency p50
    (not the tails)."""
    return bool(row["higher_is_better"]) or row["metric"] == "p50_us"


def cells(raw: dict[str, Any]) -> list[CellNoise]:
    """Each table row's again/plain ratio from a noise run's raw results:
    the report's rows, with the second plain TCP measurement in accel's place."""
    return [
        CellNoise(f"{r['topology']}/{r['workload']}", r["metric"], r["higher_is_better"], in_bar(r), r["ratio"], r["worst"], r["repeat_ratios"])
        for r in report.verdicts(raw, mode=AGAIN)
        if r["ratio"] is not None and r["repeat_ratios"]
    ]


def summary(found: list[CellNoise]) -> dict[str, Any]:
    barred = [c for c in found if c.in_bar]
    deviations = sorted(abs(c.ratio - 1) for c in barred)
    return {
        "cells": len(barred),
        "missing_bar": len([c for c in barred if c.misses_bar]),
        "outside_band": len([c for c in barred if c.outside_band]),
        "median_deviation": round(statistics.median(deviations), 4) if deviations else None,
        "max_deviation": round(deviations[-1], 4) if deviations else None,
        # The single pair furthest on the losing side, throughput and p50.
        "worst_pair": round(min([c.worst for c in barred if c.higher_is_better], default=1.0), 3),
        "worst_p50_pair": round(max([c.worst for c in barred if not c.higher_is_better], default=1.0), 3),
    }


def render(found: list[CellNoise]) -> str:
    lines = ["| cell | again / plain | worst pair | pairs | bar |", "|---|---:|---:|---|---|"]
    for c in found:
        verdict = "MISSES" if c.misses_bar else ("outside 0.95-1.05x" if c.outside_band else ("" if c.in_bar else "(tail, not in the bar)"))
        lines.append(f"| {c.cell} | {c.ratio:.2f}x | {c.worst:.2f}x | {', '.join(f'{p:.2f}' for p in c.pairs)} | {verdict} |")
    s = summary(found)
    if s["cells"]:
        lines += [
            "",
            f"Plain TCP against itself: {s['missing_bar']} of {s['cells']} cells miss the bar (below 0.95x, latency p50 above 1.05x),"
            f" {s['outside_band']} lie outside 0.95-1.05x either way; median deviation {s['median_deviation']:.1%},"
            f" largest {s['max_deviation']:.1%}; worst single pair {s['worst_pair']:.2f}x (throughput), {s['worst_p50_pair']:.2f}x (latency p50).",
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Judged:
    """A cell that lost in at least one benchmark run, against its noise."""

    cell: str
    higher_is_better: bool
    ratios: list[float | None]  # accel / plain in each judged run (None: not measured there)
    noise: float | None  # again / plain in the noise run (None: not measured)
    threshold: float  # how far from 1.00x a loss must be to count: the bar or the cell's noise, the larger
    beyond: list[bool]  # per run: lost by more than the threshold

    @property
    def verdict(self) -> str:
        if all(self.beyond):
            return "loses beyond noise in every run"
        if any(self.beyond):
            return "beyond noise in some runs"
        return "within noise"


def judge(runs: list[dict[str, Any]], noise_cells: list[CellNoise]) -> list[Judged]:
    """Each bar cell that lost in any of the benchmark runs, with whether it
    lost by more than plain TCP differs from itself in that cell."""
    noise_by = {c.cell: c for c in noise_cells}
    per_run = [{f"{r['topology']}/{r['workload']}": r for r in report.verdicts(raw)} for raw in runs]
    names: list[str] = []
    for rows in per_run:
        for name, r in rows.items():
            if in_bar(r) and r["slower"] and name not in names:
                names.append(name)
    out = []
    for name in names:
        higher = next(rows[name]["higher_is_better"] for rows in per_run if name in rows)
        n = noise_by.get(name)
        threshold = max(BAR, abs(n.ratio - 1)) if n else BAR
        ratios = [rows[name]["ratio"] if name in rows else None for rows in per_run]
        beyond = [r is not None and ((r < 1 - threshold) if higher else (r > 1 + threshold)) for r in ratios]
        out.append(Judged(name, higher, ratios, n.ratio if n else None, threshold, beyond))
    return out


def render_judged(judged: list[Judged], runs: int) -> str:
    heads = " | ".join(f"run {i + 1}" for i in range(runs))
    lines = [f"| cell | {heads} | plain against itself | verdict |", "|---|" + "---:|" * runs + "---:|---|"]
    for j in judged:
        ratios = " | ".join("-" if r is None else f"{r:.2f}x" for r in j.ratios)
        noise = "not measured" if j.noise is None else f"{j.noise:.2f}x"
        lines.append(f"| {j.cell} | {ratios} | {noise} | {j.verdict} |")
    real = [j for j in judged if all(j.beyond)]
    lines += ["", f"{len(real)} of {len(judged)} cells that lost in a run lost beyond their noise in every run: {', '.join(j.cell for j in real) or 'none'}."]
    return "\n".join(lines)


def _load(directory: str, option: str) -> dict[str, Any]:
    path = os.path.join(directory, "raw.json")
    try:
        with open(path) as f:
            raw: dict[str, Any] = json.load(f)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{path}: {exc} - give a results directory of the harness", param_hint=option) from None
    if "measurements" not in raw or "workloads" not in raw:
        raise click.BadParameter(f"{path} is not a harness result (no measurements)", param_hint=option)
    return raw


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--profile", "base", type=click.Choice(sorted(PROFILES)), default="full", show_default=True, help="Whose cells to measure.")
@click.option("--only", "only", multiple=True, help="Only cells whose key (topology/kind/label) contains this text.")
@click.option("--seconds", type=click.FloatRange(0.5, 600), default=None, help="Seconds per measurement, instead of the profile's.")
@click.option("--repeats", type=click.IntRange(1, 100), default=None, help="Pairs per cell, instead of the profile's.")
@click.option("--pin/--no-pin", default=True, show_default=True, help="Pin client to CPU 0 and server to CPU 1.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Results directory [benchmarks/results/<UTC time>-noise-<profile>].")
@click.option("--json", "as_json", is_flag=True, help="Print the cells and the summary as JSON on stdout.")
@click.option(
    "--judge",
    "judge_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="A benchmark results directory whose losing cells to judge against the noise (repeat for consecutive runs).",
)
@click.option(
    "--noise-from",
    type=click.Path(exists=True, file_okay=False),
    help="Use this earlier noise run's results directory instead of measuring.",
)
def main(
    base: str,
    only: tuple[str, ...],
    seconds: float | None,
    repeats: int | None,
    pin: bool,
    out_dir: str | None,
    as_json: bool,
    judge_dirs: tuple[str, ...],
    noise_from: str | None,
) -> None:
    exit_on_terminate()  # SIGTERM/SIGHUP unwind: namespaces, cgroups and the controller are removed
    console = Console(stderr=True)
    runs = [_load(d, "--judge") for d in judge_dirs]
    if noise_from:
        # Those options shape a measurement, and none is made: say so rather
        # than print a table that ignored them.
        ctx = click.get_current_context()
        measuring = {"base": "--profile", "only": "--only", "seconds": "--seconds", "repeats": "--repeats", "pin": "--pin/--no-pin", "out_dir": "--out"}
        given = [flag for name, flag in measuring.items() if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"--noise-from reads an earlier run and measures nothing: drop {', '.join(given)} (they apply to a new measurement)")
        raw = _load(noise_from, "--noise-from")
        if not any(m["mode"] == AGAIN for m in raw["measurements"]):
            raise click.BadParameter(f"{noise_from} is a benchmark run, not a noise run (no '{AGAIN}' measurements)", param_hint="--noise-from")
        _finish(raw, noise_from, runs, as_json, console, write=False)
        return
    prof = profile(base)
    if only:
        prof.workloads = [w for w in prof.workloads if any(o in w.key for o in only)]
        if not prof.workloads:
            wanted = " or ".join(only)
            raise click.BadParameter(f"no cell of the {base} profile matches {wanted}; keys look like 'pods/iperf3/stream 16 KiB x1'", param_hint="--only")
        prof.topologies = tuple(t for t in prof.topologies if any(w.topology == t for w in prof.workloads))
    if seconds is not None:
        prof.settings = dataclasses.replace(prof.settings, seconds=seconds)
    if repeats is not None:
        prof.repeats = repeats
    if os.geteuid() != 0:
        console.print("noise: needs root (it makes namespaces and cgroups, as the benchmark does) - run it with sudo")
        sys.exit(77)
    out_dir = out_dir or os.path.join(HERE, "results", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{prof.name}")
    try:
        raw = bar.run(console, prof, pin)
    except harness.HarnessError as exc:
        console.print(f"noise: {exc}")
        sys.exit(69)
    report.write(raw, out_dir)
    _finish(raw, out_dir, runs, as_json, console, write=True)


def _finish(raw: dict[str, Any], out_dir: str, runs: list[dict[str, Any]], as_json: bool, console: Console, write: bool) -> None:
    failed = [m for m in raw["measurements"] if m.get("error")]
    found = cells(raw)
    judged = judge(runs, found) if runs else []
    title = f"# Plain TCP against itself: {raw['profile']}, {raw['repeats']} x {raw['seconds_per_measurement']} s per cell"
    text = render(found) + (f"\n\n## Losses of the judged runs against it\n\n{render_judged(judged, len(runs))}" if runs else "")
    result = {
        "profile": raw["profile"],
        "repeats": raw["repeats"],
        "seconds": raw["seconds_per_measurement"],
        "summary": summary(found),
        "cells": [{**dataclasses.asdict(c), "misses_bar": c.misses_bar, "outside_band": c.outside_band} for c in found],
        "judged": [{**dataclasses.asdict(j), "verdict": j.verdict} for j in judged],
        "failed_measurements": len(failed),
        "results": out_dir,
    }
    if write:
        with open(os.path.join(out_dir, "noise.json"), "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(out_dir, "noise.md"), "w") as f:
            f.write(f"{title}\n\n{text}\n")
    click.echo(json.dumps(result, indent=1) if as_json else text)
    if write:
        console.print(f"results: {out_dir} (noise.md, noise.json, raw.json); {len(failed)} measurements failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
