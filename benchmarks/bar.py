"""A harness run behind a progress bar on stderr (a line now and then when
stderr is not a terminal, as in CI logs)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import harness
from .profiles import Profile


def run(console: Console, prof: Profile, pin: bool, accel_args: tuple[str, ...] = (), program_cost: bool = False) -> dict[str, Any]:
    """harness.run with a bar; raises harness.HarnessError as it does."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("starting accel", total=harness.total_measurements(prof))
        done = [0]

        def progress(what: str) -> None:
            if bar.tasks[task].description != "starting accel":
                bar.advance(task)
                done[0] += 1
            bar.update(task, description=what[:70])
            if not console.is_terminal and done[0] % 25 == 0:  # logs (CI): a line now and then
                console.print(f"[{done[0]}/{bar.tasks[task].total}] {what}")

        raw = harness.run(prof, pin, progress, accel_args, program_cost)
        bar.advance(task)
    return raw
