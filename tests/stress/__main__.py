"""accel torture: run every scenario under the real accelerator and verify
every byte.

    sudo .venv/bin/python -m tests.stress --quick          # about 2 minutes
    sudo .venv/bin/python -m tests.stress --soak --json soak.json

Exit status 0 only when every scenario ran and lost, reordered, duplicated,
corrupted and misdelivered bytes, stalls and errors are all zero.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from accel.sandbox import exit_on_terminate

from .engine import raise_fd_limit
from .scenarios import QUICK, SCENARIOS, SOAK, Ctx, Outcome

SUBNET = 212  # the test suite uses 213-219; the two must not run at once


def _row(name: str, out: Outcome, seconds: float) -> dict[str, Any]:
    r = out.result
    return {
        "scenario": name,
        "seconds": round(seconds, 1),
        "connections": r.connections,
        "completed": r.completed,
        "aborted_on_purpose": r.aborted,
        "bytes_sent": r.bytes_sent,
        "bytes_verified": r.tally.ok,
        **{k: v for k, v in r.tally.as_dict().items() if k != "ok"},
        "stalled": r.stalled,
        "errors": r.errors[:20],
        "faults": r.faults,
        "facts": out.facts,
    }


def _injected(rows: list[dict[str, Any]]) -> dict[str, int]:
    """What the run did to the datapath on purpose, by kind."""
    out = {"resets_mid_transfer": 0, "controller_kill_down_upgrade": 0, "receiver_pauses": 0, "sockhash_full_rejections": 0, "cpu_hog_runs": 0}
    for r in rows:
        f = r["facts"]
        out["resets_mid_transfer"] += r["aborted_on_purpose"]
        out["controller_kill_down_upgrade"] += f.get("controller_actions", 0)
        out["receiver_pauses"] += 2 if r["scenario"] == "slow_receiver" and f else 0
        out["sockhash_full_rejections"] += f.get("insert_failed", 0)
        out["cpu_hog_runs"] += 1 if "cpu_hogs" in f else 0
    return out


def _table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="accel torture")
    cols = ["scenario", "connections", "bytes_verified", "lost", "reordered", "duplicated", "corrupted", "misdelivered", "stalled", "faults", "seconds"]
    for c in cols:
        t.add_column(c, justify="left" if c == "scenario" else "right")
    for r in rows:
        cells = [str(r[c]) if c != "errors" else "" for c in cols]
        if r["faults"]:
            cells[0] = f"[bold red]{cells[0]} FAILED[/]"
        t.add_row(*cells)
    return t


INSERT_FAILURES = ("insert_failed", "insert_error", "insert_no_state")


def _inserts(ctl: Any) -> dict[str, int] | None:
    """The main controller's insert-failure counters (None while its pins are gone)."""
    try:
        c = ctl.counters()
    except OSError:
        return None
    return {k: c[k] for k in INSERT_FAILURES}


def _unexplained_insert_failures(before: dict[str, int] | None, after: dict[str, int] | None) -> list[str]:
    """The main controller's map (65536 sockets) never fills in any scenario
    (sockhash_full uses a controller of its own): a socket it failed to
    insert is a fault, such as a key taken by another connection."""
    if before is None or after is None or any(after[k] < before[k] for k in before):  # pins replaced meanwhile
        return []
    return [f"{k} rose by {after[k] - before[k]} with the map far from full" for k in INSERT_FAILURES if after[k] > before[k]]


@click.command()
@click.option("--quick", "profile", flag_value="quick", default=True, help="About 2 minutes (CI).")
@click.option("--soak", "profile", flag_value="soak", help="Larger counts and volumes; minutes.")
@click.option("--repeat", type=click.IntRange(1, 1000), default=1, show_default=True, help="Run the scenario list this many times (soak for longer).")
@click.option("--only", multiple=True, type=click.Choice(sorted(SCENARIOS)), help="Run just these scenarios.")
@click.option("--seed", type=int, default=None, help="Seed for sizes and choices (printed; reuse it to replay).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True), help="Write the full report here.")
@click.option(
    "--accel-arg",
    "accel_args",
    multiple=True,
    help="Pass this option to every `accel run` of the suite (repeat for more), e.g. --accel-arg=--small-write-local=65536.",
)
def main(profile: str, repeat: int, only: tuple[str, ...], seed: int | None, json_path: str | None, accel_args: tuple[str, ...]) -> None:
    exit_on_terminate()  # SIGTERM/SIGHUP unwind: namespaces, cgroups and the controller are removed
    console = Console(stderr=True)
    if os.geteuid() != 0:
        console.print("torture: needs root (it loads BPF programs, makes cgroups and namespaces); run it with sudo")
        sys.exit(77)
    from accel.sandbox import Controller, inside, pods, private_cgroup

    prof = QUICK if profile == "quick" else SOAK
    seed = seed if seed is not None else random.SystemRandom().getrandbits(32)
    names = list(only) or list(SCENARIOS)
    raise_fd_limit()
    console.print(f"profile {prof.name}, seed {seed}, scenarios: {' '.join(names)} x{repeat}" + (f", accel run {' '.join(accel_args)}" if accel_args else ""))
    rows: list[dict[str, Any]] = []
    started = time.time()
    with private_cgroup("torture") as cg, pods(2, subnet=SUBNET) as topo:
        ctl = Controller(cg, tempfile.mkdtemp(prefix="accel-torture-"))
        ctl.always = accel_args
        try:
            ctl.start()
            with (
                inside(cg),
                Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console) as bar,
            ):
                task = bar.add_task("torture", total=len(names) * repeat, detail="")
                for rnd in range(repeat):
                    for name in names:
                        bar.update(task, description=f"{name} ({rnd + 1}/{repeat})", detail="")
                        ctx = Ctx(replace(prof), topo, ctl, cg, random.Random(seed + rnd * 1000 + len(rows)))
                        ctx.progress = lambda msg: bar.update(task, detail=msg)
                        t0 = time.monotonic()
                        before = _inserts(ctl)
                        try:
                            out = SCENARIOS[name](ctx)
                        except Exception as exc:  # a crash of a scenario is a failure, reported
                            from .engine import Result

                            out = Outcome(Result(errors=[f"scenario crashed: {exc!r}", *traceback.format_exc().splitlines()[-6:]]))
                        out.result.errors += _unexplained_insert_failures(before, _inserts(ctl))
                        rows.append(_row(name, out, time.monotonic() - t0))
                        bar.advance(task)
            final = ctl.counters()
        finally:
            ctl.close()
    report: dict[str, Any] = {
        "profile": prof.name,
        "seed": seed,
        "repeat": repeat,
        "accel_args": list(accel_args),
        "started": started,
        "seconds": round(time.time() - started, 1),
        "kernel": os.uname().release,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "controller_counters": final,
        "totals": {
            "faults_injected": _injected(rows),
            "connections": sum(r["connections"] for r in rows),
            "bytes_verified": sum(r["bytes_verified"] for r in rows),
            "faults": sum(r["faults"] for r in rows),
        },
        "scenarios": rows,
    }
    Console(width=max(160, Console().width)).print(_table(rows))
    for r in rows:
        for e in r["errors"][:5]:
            console.print(f"  {r['scenario']}: {e}")
    t = report["totals"]
    console.print(f"faults injected: {t['faults_injected']}")
    console.print(
        f"{t['connections']} connections, {t['bytes_verified']} bytes verified, {t['faults']} faults; "
        f"redirected by the last controller (since it started) {final.get('redirected_bytes', 0)} bytes; peak RSS {report['peak_rss_mib']} MiB; seed {seed}"
    )
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
    sys.exit(1 if t["faults"] else 0)


if __name__ == "__main__":
    main()
