"""Parsers for each tool's output: one function per tool, each returning a
flat dict of numbers. Kept free of I/O so they are tested on recorded output."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any


class ParseError(ValueError):
    """A tool printed something we do not understand: the run failed."""


def iperf3(text: str) -> dict[str, float]:
    """``iperf3 -J`` client output: receiver-side throughput and bytes."""
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"iperf3 printed no JSON: {text[:200]!r}") from exc
    if data.get("error"):
        raise ParseError(f"iperf3: {data['error']}")
    try:
        recv = data["end"]["sum_received"]
        sent = data["end"]["sum_sent"]
    except KeyError as exc:
        raise ParseError(f"iperf3 JSON without {exc}") from exc
    return {
        "gbit_per_s": recv["bits_per_second"] / 1e9,
        "bytes": float(sent["bytes"]),
        "seconds": float(recv["seconds"]),
        "retransmits": float(sent.get("retransmits", 0)),
    }


_PCT = re.compile(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)")
_AVG = re.compile(r"avg-rtt=([\d.]+)|avg-lat=\s*([\d.]+)")
_MSGS = re.compile(r"ReceivedMessages=(\d+)")


def sockperf(text: str) -> dict[str, float]:
    """``sockperf ping-pong --full-rtt`` output: round-trip percentiles (us)."""
    pct = {float(p): float(v) for p, v in _PCT.findall(text)}
    if 50.0 not in pct or 99.0 not in pct:
        raise ParseError(f"sockperf printed no percentiles: {text[-300:]!r}")
    avg = _AVG.search(text)
    msgs = _MSGS.search(text)
    return {
        "p50_us": pct[50.0],
        "p99_us": pct[99.0],
        "p999_us": pct.get(99.9, pct[99.0]),
        "mean_us": float(next(g for g in avg.groups() if g)) if avg else float("nan"),
        "count": float(msgs.group(1)) if msgs else 0.0,
    }


def loadgen(text: str) -> dict[str, float]:
    """The harness's own generator prints one JSON object."""
    line = text.strip().splitlines()[-1] if text.strip() else ""
    try:
        return {k: float(v) for k, v in json.loads(line).items()}
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ParseError(f"loadgen printed {text[-200:]!r}") from exc


def redis_benchmark(text: str) -> dict[str, float]:
    """``redis-benchmark --csv``: requests per second per test (set, get)."""
    out: dict[str, float] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[0] != "test":
            try:
                out[f"{row[0].lower()}_rps"] = float(row[1])
            except ValueError:
                continue
    if not out:
        raise ParseError(f"redis-benchmark printed no CSV rows: {text[-300:]!r}")
    return out


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_LAT = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_ERR = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)|Socket errors: (.*)")


def wrk(text: str) -> dict[str, float]:
    """``wrk --latency`` output: requests per second and latency percentiles."""
    rps = _RPS.search(text)
    if not rps:
        raise ParseError(f"wrk printed no Requests/sec: {text[-300:]!r}")
    out = {"requests_per_s": float(rps.group(1))}
    for pct, value, unit in _LAT.findall(text):
        out[f"p{pct}_us"] = float(value) * _UNITS[unit]
    err = _ERR.search(text)
    if err:
        raise ParseError(f"wrk saw errors: {err.group(0)}")
    return out
