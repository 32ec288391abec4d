"""Where redirect starts to win on this node: the small-write limits for
`accel run --small-write-local/--small-write-remote`.

The crossover depends on the host: on one guest loopback redirect won from
4 KiB writes up with four streams, on another it lost up to 16 KiB
(benchmarks/RESULTS.md, "Thresholds"). So measure it where accel runs. This
runs one and four iperf3 streams at each write size from 64 B to 64 KiB, on
loopback (one namespace) and between two pods, plain TCP against accelerated
with the small-write rule off (redirect itself is what is measured), modes
interleaved and pinned like every benchmark.

A size wins when the geometric mean of its one- and four-stream ratios
(medians of the per-repeat accel/plain pairs) is at least 1: the rule counts
per socket and cannot tell one stream from four. A path's limit is the
smallest measured size from which every larger measured size wins; writes
below it count as small (a stream of them moves to TCP, which coalesces them
better). When no size wins, the limit is twice the largest measured size.

    python -m benchmarks.crossover [--seconds 2] [--repeats 5] [--out DIR] [--json]

Root only (namespaces, cgroups, the real controller); about 10 minutes with
the defaults. Results directory as for `python -m benchmarks`, plus
crossover.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
from .profiles import CROSSOVER_SIZES, CROSSOVER_TOPOLOGIES, crossover
from .stats import paired_ratios
from .workloads import human_size

HERE = os.path.dirname(os.path.abspath(__file__))
# The controller option each path's limit is for.
OPTIONS = {"loopback": "--small-write-local", "pods": "--small-write-remote"}


@dataclass(frozen=True)
class SizeVerdict:
    size: int
    one: float | None  # median accel/plain ratio, one stream
    four: float | None  # the same, four streams
    score: float | None  # their geometric mean
    wins: bool


@dataclass(frozen=True)
class PathLimit:
    topology: str
    limit: int
    sizes: list[SizeVerdict]
    note: str


def _median_ratio(pairs: dict[tuple[str, str], dict[int, float]], key: str) -> float | None:
    ratios = paired_ratios(pairs.get((key, "accel"), {}), pairs.get((key, "plain"), {}))
    return statistics.median(ratios) if ratios else None


def limits(raw: dict[str, Any], sizes: tuple[int, ...] = CROSSOVER_SIZES) -> list[PathLimit]:
    """Each path's small-write limit from a crossover run's raw results."""
    pairs: dict[tuple[str, str], dict[int, float]] = {}
    for (key, metric, mode), values in report.per_repeat(raw).items():
        if metric == "gbit_per_s":
            pairs[(key, mode)] = values
    out = []
    for topo in CROSSOVER_TOPOLOGIES:
        verdicts = []
        for size in sizes:
            one = _median_ratio(pairs, f"{topo}/iperf3/stream {human_size(size)} x1")
            four = _median_ratio(pairs, f"{topo}/iperf3/stream {human_size(size)} x4")
            known = [r for r in (one, four) if r is not None and r > 0]
            score = math.exp(sum(math.log(r) for r in known) / len(known)) if known else None
            verdicts.append(SizeVerdict(size, one, four, score, score is not None and score >= 1.0))
        if not any(v.score is not None for v in verdicts):
            continue  # this path was not measured
        # The smallest size from which every larger one wins (a size with no
        # measurement counts as a loss: when in doubt, TCP).
        limit = 2 * sizes[-1]
        for v in reversed(verdicts):
            if not v.wins:
                break
            limit = v.size
        if limit == 2 * sizes[-1]:
            note = f"no measured size up to {human_size(sizes[-1])} won: streams of writes below {human_size(limit)} move to TCP"
        elif limit == sizes[0]:
            note = f"every measured size won, down to {human_size(sizes[0])}"
        else:
            note = f"redirect wins from {human_size(limit)} writes up"
        out.append(PathLimit(topo, limit, verdicts, note))
    return out


def _fmt(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def render(found: list[PathLimit]) -> str:
    lines = []
    for p in found:
        lines += [f"## {p.topology}", "", "| write | one stream | four streams | geometric mean | redirect |", "|---:|---:|---:|---:|---|"]
        for v in p.sizes:
            lines.append(f"| {human_size(v.size)} | {_fmt(v.one)} | {_fmt(v.four)} | {_fmt(v.score)} | {'wins' if v.wins else 'loses'} |")
        lines += ["", f"{OPTIONS[p.topology]}={p.limit}: {p.note}", ""]
    flags = " ".join(f"{OPTIONS[p.topology]}={p.limit}" for p in found)
    lines.append(f"On this node: accel run {flags}")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seconds", type=click.FloatRange(0.5, 60), default=2.0, show_default=True, help="Seconds per measurement.")
@click.option("--repeats", type=click.IntRange(1, 50), default=5, show_default=True, help="Plain/accelerated pairs per cell.")
@click.option(
    "--sizes",
    default=",".join(str(s) for s in CROSSOVER_SIZES),
    show_default=True,
    help="Write sizes in bytes, comma-separated, ascending.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Results directory [benchmarks/results/<UTC time>-crossover].")
@click.option("--accel-arg", "accel_args", multiple=True, help="Pass this option to `accel run` too (repeat for more).")
@click.option("--json", "as_json", is_flag=True, help="Print the limits as JSON on stdout.")
def main(seconds: float, repeats: int, sizes: str, out_dir: str | None, accel_args: tuple[str, ...], as_json: bool) -> None:
    exit_on_terminate()  # SIGTERM/SIGHUP unwind: namespaces, cgroups and the controller are removed
    console = Console(stderr=True)
    try:
        chosen = tuple(int(s) for s in sizes.split(","))
    except ValueError:
        raise click.BadParameter(f"{sizes!r}: give byte counts separated by commas, e.g. 1024,4096", param_hint="--sizes") from None
    if not chosen or list(chosen) != sorted(set(chosen)) or chosen[0] < 1 or chosen[-1] > 1 << 20:
        raise click.BadParameter(f"{sizes!r}: sizes must be distinct, ascending, from 1 B to 1 MiB", param_hint="--sizes")
    if os.geteuid() != 0:
        console.print("crossover: needs root (it runs the accelerator and makes namespaces and cgroups) - run it with sudo")
        sys.exit(77)
    prof = crossover(chosen)
    prof.repeats = repeats
    prof.settings = dataclasses.replace(prof.settings, seconds=seconds)
    out_dir = out_dir or os.path.join(HERE, "results", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-crossover")
    try:
        raw = bar.run(console, prof, True, ("--no-small-write-fallback", *accel_args))
    except harness.HarnessError as exc:
        console.print(f"crossover: {exc}")
        sys.exit(69)
    report.write(raw, out_dir)
    failed = [m for m in raw["measurements"] if m.get("error")]
    found = limits(raw, chosen)
    result = {
        "limits": {OPTIONS[p.topology].lstrip("-"): p.limit for p in found},
        "paths": [dataclasses.asdict(p) for p in found],
        "failed_measurements": len(failed),
        "results": out_dir,
    }
    with open(os.path.join(out_dir, "crossover.json"), "w") as f:
        json.dump(result, f, indent=1)
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(render(found))
    console.print(f"results: {out_dir} (crossover.json, raw.json, report.md); {len(failed)} measurements failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
