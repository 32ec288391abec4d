"""From raw results to a markdown report and PNG plots. Pure functions of the
raw JSON, so a report can be rebuilt from any results directory; `write` puts
them in one."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from typing import Any

from .stats import Summary, paired_ratios, ratio, split, summarize

MODES = ("plain", "accel", "unix")
MODE_NAMES = {"plain": "plain TCP", "accel": "accelerated", "unix": "AF_UNIX"}
# Rows shown per workload kind: (metric, suffix, higher is better).
ROWS: dict[str, list[tuple[str, str, bool]]] = {
    "iperf3": [("gbit_per_s", "", True)],
    "latency": [("p50_us", " p50", False), ("p99_us", " p99", False), ("p999_us", " p99.9", False)],
    "connrate": [("per_s", "", True)],
    "redis": [("set_rps", " SET", True), ("get_rps", " GET", True)],
    "nginx": [("requests_per_s", "", True), ("p99_us", " p99", False)],
}
UNITS = {
    "gbit_per_s": "Gbit/s",
    "p50_us": "us",
    "p99_us": "us",
    "p999_us": "us",
    "per_s": "conn/s",
    "set_rps": "ops/s",
    "get_rps": "ops/s",
    "requests_per_s": "req/s",
}


def summaries(raw: dict[str, Any]) -> dict[tuple[str, str, str], Summary]:
    """(workload key, metric, mode) -> summary over the successful repeats."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for m in raw["measurements"]:
        if m.get("error"):
            continue
        for metric, v in m["metrics"].items():
            values[(m["workload"], metric, m["mode"])].append(float(v))
    return {k: summarize(v) for k, v in values.items() if v}


def per_repeat(raw: dict[str, Any]) -> dict[tuple[str, str, str], dict[int, float]]:
    """(workload key, metric, mode) -> {repeat: value} over the successful repeats."""
    out: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for m in raw["measurements"]:
        if m.get("error"):
            continue
        for metric, v in m["metrics"].items():
            out[(m["workload"], metric, m["mode"])][int(m.get("repeat", 0))] = float(v)
    return out


def failures(raw: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m in raw["measurements"]:
        if m.get("error"):
            out[(m["workload"], m["mode"])].append(m["error"])
    return out


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell(s: Summary | None, failed: list[str]) -> str:
    if s is None:
        return f"FAILED ({len(failed)}x, see below)" if failed else "n/a"
    spread = f" ±{s.spread_pct / 2:.0f}%" if s.n > 1 and not math.isnan(s.spread_pct) else ""
    note = f" ({len(failed)} failed)" if failed else ""
    return f"{_fmt(s.median)}{spread}{note}"


TABLE_HEAD = ["| workload | unit | plain TCP | accelerated | AF_UNIX | accel / plain | worst | lost |", "|---|---|---:|---:|---:|---:|---:|---:|"]


def _worst(r: dict[str, Any]) -> str:
    return "" if r["worst"] is None else f"{r['worst']:.2f}x"


def _lost(r: dict[str, Any]) -> str:
    if not r["repeat_ratios"]:
        return ""
    text = f"{r['repeats_lost']}/{len(r['repeat_ratios'])}"
    return f"{text} SPLIT {_groups(r['split'])}" if r["split"] else text


def _groups(groups: tuple[list[float], list[float]]) -> str:
    low, high = groups
    return f"{min(low):.2f}-{max(low):.2f}x / {min(high):.2f}-{max(high):.2f}x"


def verdicts(raw: dict[str, Any], mode: str = "accel") -> list[dict[str, Any]]:
    """One entry per table row: the numbers and whether ``mode`` (accel, or
    benchmarks.noise's second plain TCP) lost to plain TCP."""
    sums = summaries(raw)
    reps = per_repeat(raw)
    fails = failures(raw)
    rows = []
    for w in raw["workloads"]:
        kind = w["key"].split("/")[1]
        for metric, suffix, higher in ROWS.get(kind, [(w["metric"], "", w["higher_is_better"])]):
            cells = {mode: sums.get((w["key"], metric, mode)) for mode in MODES}
            if all(c is None for c in cells.values()) and not any(fails.get((w["key"], m)) for m in MODES):
                continue
            r = ratio(sums.get((w["key"], metric, mode)), cells["plain"])
            slower = r is not None and ((r < 1) if higher else (r > 1))
            # The median hides a cell that wins in most repeats and loses
            # badly in some: each repeat's pair, the worst, and a split.
            pairs = paired_ratios(reps.get((w["key"], metric, mode), {}), reps.get((w["key"], metric, "plain"), {}))
            lost = sum(1 for p in pairs if ((p < 1) if higher else (p > 1)))
            worst = (min(pairs) if higher else max(pairs)) if pairs else None
            rows.append(
                {
                    "topology": w["key"].split("/")[0],
                    "workload": w["key"].split("/", 2)[2] + suffix,
                    "kind": kind,
                    "metric": metric,
                    "unit": UNITS.get(metric, ""),
                    "higher_is_better": higher,
                    "modes": w["modes"],
                    "cells": cells,
                    "failed": {m: fails.get((w["key"], m), []) for m in MODES},
                    "ratio": r,
                    "slower": slower,
                    "repeat_ratios": [round(p, 3) for p in pairs],
                    "worst": worst,
                    "repeats_lost": lost,
                    "split": split(pairs),
                }
            )
    return rows


def markdown(raw: dict[str, Any], plots: list[str]) -> str:
    mc = raw["machine"]
    lines = [
        f"# accel benchmark: {raw['profile']} profile",
        "",
        f"- Machine: {mc['cpu_model']}, {mc['cores']} cores, {mc['memory_gib']} GiB, kernel {mc['kernel']}; accel {mc['accel_commit']}",
        f"- Placement: {raw['placement']}",
        *([f"- `accel run` options: {' '.join(raw['accel_args'])}"] if raw.get("accel_args") else []),
        f"- {raw['repeats']} repeats per cell, {raw['seconds_per_measurement']} s each, modes interleaved (order reversed every other repeat);"
        f" cells are medians, ± half the interquartile range; run took {raw['duration_s']:.0f} s",
        "- Ratio = accelerated / plain TCP. For latency (us) lower is better, so a ratio above 1 is a loss."
        " Worst = the worst repeat's ratio (each repeat pairs the two modes run back to back); lost = repeats in which accel lost;"
        " SPLIT = the repeats fall into two groups (shown as low / high).",
        "- Every accelerated cell was cross-checked: the controller's `redirected_bytes` must have grown during it, and plain cells must not have.",
        "- Tools: " + "; ".join(f"{k} `{v}`" for k, v in mc["tools"].items()),
        "",
    ]
    rows = verdicts(raw)
    for topo, desc in raw["topologies"].items():
        trs = [r for r in rows if r["topology"] == topo]
        if not trs:
            continue
        lines += [f"## {topo}", "", desc, "", *TABLE_HEAD]
        for r in trs:
            cells = [_cell(r["cells"][m], r["failed"][m]) if m in r["modes"] else "" for m in MODES]
            rat = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            if r["slower"]:
                rat = f"**{rat} SLOWER**"
            lines.append(f"| {r['workload']} | {r['unit']} | {' | '.join(cells)} | {rat} | {_worst(r)} | {_lost(r)} |")
        lines.append("")
    lines += program_cost_table(raw)
    lost = [r for r in rows if r["slower"]]
    lines += ["## Where acceleration loses", ""]
    if lost:
        for r in lost:
            lines.append(f"- {r['topology']}, {r['workload']}: {r['ratio']:.2f}x of plain TCP")
    else:
        lines.append("- nowhere in this run (by the median)")
    sometimes = [r for r in rows if not r["slower"] and r["repeats_lost"]]
    if sometimes:
        lines += ["", "Cells that win by the median but lost in some repeats:", ""]
        lines += [f"- {r['topology']}, {r['workload']}: lost {_lost(r)} repeats, worst {_worst(r)}" for r in sometimes]
    splits = [r for r in rows if r["split"]]
    if splits:
        lines += ["", "Cells whose repeats split into two groups (bimodal: the median describes neither):", ""]
        lines += [f"- {r['topology']}, {r['workload']}: {_groups(r['split'])}" for r in splits]
    lines += waits_section(raw)
    failed = [(m["workload"], m["mode"], m["error"]) for m in raw["measurements"] if m.get("error")]
    warned = [(m["workload"], m["warning"]) for m in raw["measurements"] if m.get("warning")]
    lines += ["", "## Failed measurements", ""]
    lines += [f"- {w} [{mode}]: {e}" for w, mode, e in failed] or ["- none"]
    if warned:
        lines += ["", "## Warnings", ""] + [f"- {w}: {msg}" for w, msg in warned]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    return "\n".join(lines) + "\n"


def waits_section(raw: dict[str, Any]) -> list[str]:
    """Accelerated cells in which senders waited on TCP for their receiver,
    with the waits and the time they took per repeat: a wait costs at least
    one TCP retransmission timeout on kernels from 6.16 (docs/DESIGN.md), so
    these are the repeats to look at when a cell is slow or split."""
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for m in raw["measurements"]:
        if m["mode"] == "accel" and m.get("waits"):
            by_cell.setdefault(m["workload"], []).append(m)
    if not by_cell:
        return []
    out = ["", "## Accelerated repeats in which a sender waited on TCP", ""]
    for key, ms in sorted(by_cell.items()):
        reps = ", ".join(f"{m['waits']} ({m['wait_ms']:.0f} ms)" for m in sorted(ms, key=lambda m: m["repeat"]))
        out.append(f"- {key}: {len(ms)} of {raw['repeats']} repeats waited; waits (time waited) per such repeat: {reps}")
    return out


def program_cost_table(raw: dict[str, Any]) -> list[str]:
    """What each BPF program cost per run, per workload (median over the
    accelerated repeats), when the run measured it (--program-cost)."""
    by_cell: dict[tuple[str, str], list[float]] = defaultdict(list)
    entries: list[str] = []
    for m in raw["measurements"]:
        for entry, c in (m.get("program_cost") or {}).items():
            by_cell[(m["workload"], entry)].append(c["ns_per_run"])
            if entry not in entries:
                entries.append(entry)
    if not by_cell:
        return []
    workloads = list(dict.fromkeys(w for w, _ in by_cell))
    lines = [
        "## What the programs cost",
        "",
        "Nanoseconds per program run as the kernel timed them (BPF run-time statistics, which add two clock reads to every run):"
        " for the sk_msg program, the cost of each message's verdict.",
        "",
        "| workload | " + " | ".join(f"{e} ns/run" for e in entries) + " |",
        "|---|" + "---:|" * len(entries),
    ]
    for w in workloads:
        cells = [f"{statistics.median(by_cell[(w, e)]):.0f}" if by_cell.get((w, e)) else "" for e in entries]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return [*lines, ""]


COLORS = {"plain": "#7f7f7f", "accel": "#d62728", "unix": "#1f77b4"}


def plots(raw: dict[str, Any], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sums = summaries(raw)
    made: list[str] = []
    by_topo: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for w in raw["workloads"]:
        by_topo[w["key"].split("/")[0]].append(w)

    # 1. Throughput against write size, per topology.
    for topo, ws in by_topo.items():
        streams = [w for w in ws if w["key"].split("/")[1] == "iperf3"]
        if not streams:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for n_streams, style in (("x1", "-"), ("x4", "--")):
            for mode in MODES:
                pts = []
                for w in streams:
                    if not w["key"].endswith(n_streams):
                        continue
                    s = sums.get((w["key"], "gbit_per_s", mode))
                    size = _size_of(w["key"])
                    if s is not None and size:
                        pts.append((size, s))
                if pts:
                    pts.sort()
                    xs = [p[0] for p in pts]
                    ax.errorbar(
                        xs,
                        [p[1].median for p in pts],
                        yerr=[[p[1].median - p[1].p25 for p in pts], [p[1].p75 - p[1].median for p in pts]],
                        label=f"{MODE_NAMES[mode]} {n_streams}",
                        color=COLORS[mode],
                        linestyle=style,
                        marker="o",
                        capsize=2,
                    )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("write size (bytes)")
        ax.set_ylabel("Gbit/s (median, IQR)")
        ax.set_title(f"Throughput vs write size: {topo}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        made.append(_save(fig, out_dir, f"throughput_{topo}.png"))
        plt.close(fig)

    # 2. Latency percentiles per mode.
    for topo, ws in by_topo.items():
        lat = [w for w in ws if w["key"].split("/")[1] == "latency"]
        if not lat:
            continue
        fig, axes = plt.subplots(1, len(lat), figsize=(3.2 * len(lat) + 1, 4), squeeze=False)
        for ax, w in zip(axes[0], lat, strict=True):
            pcts = [("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")]
            modes = [m for m in MODES if m in w["modes"]]
            width = 0.8 / len(modes)
            for i, mode in enumerate(modes):
                vals = [sums[(w["key"], p, mode)].median if (w["key"], p, mode) in sums else 0 for p, _ in pcts]
                ax.bar([j + i * width for j in range(len(pcts))], vals, width, label=MODE_NAMES[mode], color=COLORS[mode])
            ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(pcts))], [n for _, n in pcts])
            ax.set_yscale("log")
            ax.set_title(w["key"].split("/", 2)[2], fontsize=9)
            ax.set_ylabel("round trip, us")
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"Request/response latency: {topo}")
        fig.tight_layout()
        made.append(_save(fig, out_dir, f"latency_{topo}.png"))
        plt.close(fig)

    # 3. Speedups of applications and connection rate (accel / plain).
    rows = [r for r in verdicts(raw) if r["kind"] in ("redis", "nginx", "connrate") or r["topology"] == "sidecar"]
    rows = [r for r in rows if r["ratio"] is not None and r["higher_is_better"]]
    if rows:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
        labels = [f"{r['topology']}: {r['workload']}" for r in rows]
        vals = [r["ratio"] for r in rows]
        ax.barh(labels, vals, color=["#d62728" if v < 1 else "#2ca02c" for v in vals])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("accelerated / plain TCP (higher is better)")
        ax.set_title("Applications, connection rate and sidecar chain")
        ax.invert_yaxis()
        fig.tight_layout()
        made.append(_save(fig, out_dir, "speedups.png"))
        plt.close(fig)
    return made


def _size_of(key: str) -> int:
    label = key.split("/", 2)[2]  # "stream 16 KiB x1"
    parts = label.split()
    try:
        n = int(parts[1])
    except (IndexError, ValueError):
        return 0
    return n * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20}.get(parts[2], 1)


def _save(fig: Any, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=110)
    return path


def write(raw: dict[str, Any], out_dir: str) -> tuple[str, list[str]]:
    """A results directory: raw.json (every repeat), report.md and the plots.
    Returns the report's path and the plots'."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "raw.json"), "w") as f:
        json.dump(raw, f, indent=1)
    pngs = plots(raw, out_dir)
    md = os.path.join(out_dir, "report.md")
    with open(md, "w") as f:
        f.write(markdown(raw, pngs))
    return md, pngs
