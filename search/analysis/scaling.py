"""How the best learning rate scales with batch size: a power-law fit, and what it says."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from search.analysis.per_batch_size import BatchSizeResult, within

# Reference exponents of learning-rate scaling rules.
SCALING_RULES = {0.0: "no scaling (the same learning rate for every batch size)", 0.5: "square-root scaling", 1.0: "linear scaling"}
# Only batch sizes whose best loss is within this fraction of the best enter the exponent fit.
FIT_WITHIN = 0.25


@dataclass(frozen=True)
class ScalingFit:
    """log(lr) = intercept + exponent * log(batch size), least squares over batch sizes."""

    exponent: float
    intercept: float
    points: int
    stderr: float | None  # None with two points: a slope through them, not a fit

    def lr_at(self, batch_size: float) -> float:
        return math.exp(self.intercept + self.exponent * math.log(batch_size))


def fit_exponent(points: list[tuple[float, float]]) -> ScalingFit | None:
    """Fit y = c * x^k on log-log axes; None with fewer than two distinct x."""
    points = [(x, y) for x, y in points if x > 0 and y > 0]
    if len({x for x, _ in points}) < 2:
        return None
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    x_mean, y_mean = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - x_mean) ** 2 for x in xs)
    exponent = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys)) / sxx
    intercept = y_mean - exponent * x_mean
    stderr = None
    if len(points) > 2:
        residuals = sum((y - intercept - exponent * x) ** 2 for x, y in zip(xs, ys))
        stderr = math.sqrt(residuals / (len(points) - 2) / sxx)
    return ScalingFit(exponent, intercept, len(points), stderr)


def fitted_sizes(results: list[BatchSizeResult]) -> list[BatchSizeResult]:
    """Batch sizes whose best loss is within `FIT_WITHIN` of the overall best (and that recorded a learning rate).

    Far from it, the best trial is a poor optimum (or one that barely learned), and the
    learning rate it happened to draw says nothing about how the optimum scales.
    """
    return [r for r in within(results, FIT_WITHIN) if r.best_effective_lr is not None]


def lr_fits(results: list[BatchSizeResult]) -> tuple[ScalingFit | None, ScalingFit | None]:
    """Exponents of the optimizer's learning rate, and of lr / (1 - momentum), against batch size.

    The second is the step size momentum SGD takes in the long run: when the best momentum
    moves with batch size, it is the fairer measure of how the step should scale.
    """
    best = fitted_sizes(results)
    plain = fit_exponent([(r.batch_size, r.best_effective_lr) for r in best])  # type: ignore[misc]
    adjusted = fit_exponent([(r.batch_size, r.best_effective_lr / (1 - r.best_momentum)) for r in best])  # type: ignore[operator]
    return plain, adjusted
