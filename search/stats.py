"""The statistics that layers below the analysis share with it: Student-t intervals (also computed
in SQL by the view `search_frontier`, from `T975` and `t975`'s expansion, so that a query and the
report never disagree) and the expected best of k draws (a frontier study's `until_converged` judges
tuning while it runs, exactly as the report does afterwards).

Standard library only.
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


# Fewer draws have no doubling of k to judge tuning by.
MIN_DRAWS = 4


def expected_best_of_k(values: list[float], k: int) -> float:
    """E[min of k draws with replacement] from the empirical distribution of `values` (exact, no sampling):
    sorted ascending, value i is the minimum with probability ((n - i) / n)^k - ((n - i - 1) / n)^k."""
    return math.fsum(w * value for w, value in zip(best_of_k_weights(len(values), k), sorted(values)))


def best_of_k_weights(n: int, k: int) -> list[float]:
    """The probability that the i-th smallest of n values is the minimum of k draws with replacement."""
    return [((n - i) / n) ** k - ((n - i - 1) / n) ** k for i in range(n)]


def improvement_over_last_doubling(values: list[float]) -> float | None:
    """How much the expected best still falls from k = N/2 to k = N draws (None: fewer than MIN_DRAWS):
    the tuning curve's slope where it was last measured (Dodge et al. 2019)."""
    n = len(values)
    return expected_best_of_k(values, n // 2) - expected_best_of_k(values, n) if n >= MIN_DRAWS else None


def is_under_tuned(improvement: float | None, seed_half_width: float | None) -> bool | None:
    """Under-tuned: the expected best still improves by more than the seed re-runs' 95% half-width over
    the last doubling of draws. None: cannot tell (too few draws, or no seed interval)."""
    if improvement is None or seed_half_width is None or not math.isfinite(seed_half_width):
        return None
    return improvement > seed_half_width
