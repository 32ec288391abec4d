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


def paired_ratios(accel: dict[int, float], plain: dict[int, float]) -> list[float]:
    """accelerated / plain per repeat (the two modes of one repeat ran back to
    back), for the repeats where both succeeded."""
    return [accel[r] / plain[r] for r in sorted(accel) if plain.get(r)]


# Two groups are a split, not noise, when the gap between them is this much
# of the lower group's top and more than twice either group's own width: the
# bimodal bulk cell this exists for had groups 2.61-2.80x and 0.60-0.97x.
SPLIT_GAP = 0.2


def split(values: list[float]) -> tuple[list[float], list[float]] | None:
    """The values as two groups (low, high) if they fall apart at one gap,
    each group of at least two; else None. A single outlier is not a split:
    the worst repeat shows it."""
    vals = sorted(values)
    if len(vals) < 4:
        return None
    gaps = [(vals[i + 1] - vals[i], i) for i in range(len(vals) - 1)]
    gap, i = max(gaps)
    low, high = vals[: i + 1], vals[i + 1 :]
    if len(low) < 2 or len(high) < 2 or low[-1] <= 0:
        return None
    width = max(low[-1] - low[0], high[-1] - high[0])
    if gap < SPLIT_GAP * low[-1] or gap <= 2 * width:
        return None
    return low, high
