"""Student-t intervals, the one piece of statistics the analysis and the SQL views share.

Standard library only: the SQL view `search_frontier` computes the same interval in SQL from
`T975` and `t975`'s expansion, so that a query and the report never disagree.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
Z975 = 1.959964


def t975(df: int) -> float:
    """Student's t quantile for a two-sided 95% interval (beyond 30 df, the Cornish-Fisher expansion, within 1e-3)."""
    if df < 1:
        raise ValueError("a t interval needs at least one degree of freedom")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    """A mean with the half-width of its t-based 95% interval (None from a single value)."""

    mean: float
    half_width: float | None
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.half_width is not None and abs(self.mean) > self.half_width


def mean_ci95(values: list[float]) -> Interval:
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(mean, None, n)
    return Interval(mean, t975(n - 1) * statistics.stdev(values) / math.sqrt(n), n)
