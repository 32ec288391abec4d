"""Medians and spread of repeated measurements."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p25: float
    p75: float
    min: float
    max: float

    @property
    def spread_pct(self) -> float:
        """Interquartile range relative to the median, in percent."""
        return 100.0 * (self.p75 - self.p25) / self.median if self.median else math.nan

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "spread_pct": round(self.spread_pct, 2)}


def summarize(values: list[float]) -> Summary:
    vals = sorted(v for v in values if not math.isnan(v))
    if not vals:
        raise ValueError("no values to summarize")
    if len(vals) == 1:
        v = vals[0]
        return Summary(1, v, v, v, v, v)
    q = statistics.quantiles(vals, n=4, method="inclusive")
    return Summary(len(vals), statistics.median(vals), q[0], q[2], vals[0], vals[-1])


def ratio(accel: Summary | None, plain: Summary | None) -> float | None:
    """accelerated / plain of the medians (None when either is missing)."""
    if accel is None or plain is None or plain.median == 0:
        return None
    return accel.median / plain.median
