"""The critical batch size, measured and predicted (McCandlish et al. 2018, arXiv 1812.06162).

The model: at batch size B, reaching a given loss takes E(B) = E_min (1 + B / B_crit) examples,
so at a fixed budget E a batch size B makes the progress of E / (1 + B / B_crit) small-batch
examples, and the loss rises monotonically with B; B_crit is where a batch costs twice the
examples. A frontier study measures it directly:

* the data-efficiency curve L_small(E'): the smallest batch size b's best configuration trained
  with full schedules on E/8, E/4, E/2 and E examples (`search.study.frontier`), per seed;
* each frontier point (batch size B, seed k, loss L) inverted through seed k's curve gives the
  examples b needed for the same loss, E' = L_small^-1(L), and r = E / E'. Under the model
  r = (1 + B/B_crit) / (1 + b/B_crit), i.e. r - 1 = (B - r b) / B_crit: a regression through the
  origin gives 1/B_crit with a t-based 95% interval (with b << B_crit this is the familiar
  E/E_eff - 1 = B/B_crit). A loss worse than the curve's smallest budget needs more than 8x the
  examples: such a point is outside the curve, counted, and left out of the fit.

The prediction: the noise-scale probe's B_simple along a run (`search.measure.probe`) stands in for
B_noise; with it the progress equation dm/dE = 1 / (1 + B / B_noise(m)) is integrated for every
batch size (m: small-batch examples' worth of progress), and the predicted frontier is L_small at
the examples b needs for the same progress. B_simple equals B_crit only when the Hessian is
proportional to the identity, so the two are reported side by side, with their ratio.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from search.record import (
    EFFICIENCY,
    SEED,
    Hyperparams,
    ProbePoint,
    ProbeResult,
    TrialRecord,
    is_finite,
)
from search.stats import t975

# Doublings below B_crit / DOUBLING_CHEAP cost at most 1 / (DOUBLING_CHEAP + 1) more examples (20% at 4).
DOUBLING_CHEAP = 4
PROGRESS_STEPS = 2000  # Euler steps of the progress integration


@dataclass(frozen=True)
class Curve:
    """One seed's data-efficiency curve: examples trained (ascending) and final validation loss, made non-increasing."""

    examples: tuple[float, ...]
    losses: tuple[float, ...]

    def examples_for(self, loss: float) -> float | None:
        """The examples that reach `loss` (interpolating log-examples linearly in loss); None above the
        smallest budget's loss (more than the curve's range), extrapolated along the last segment below the largest's."""
        xs, ys = [math.log(e) for e in self.examples], self.losses
        if loss > ys[0] or len(xs) < 2:
            return None
        for i in range(len(xs) - 1):
            if ys[i + 1] <= loss <= ys[i] and ys[i] > ys[i + 1]:
                return math.exp(xs[i] + (ys[i] - loss) / (ys[i] - ys[i + 1]) * (xs[i + 1] - xs[i]))
        if loss < ys[-1] and ys[-2] > ys[-1]:
            return math.exp(xs[-1] + (ys[-1] - loss) / (ys[-2] - ys[-1]) * (xs[-1] - xs[-2]))
        return None  # a flat stretch: the loss does not fix the examples

    def loss_at(self, examples: float) -> float | None:
        """L_small(E'), interpolated in log-examples; None outside the measured budgets."""
        if not self.examples[0] * (1 - 1e-9) <= examples <= self.examples[-1] * (1 + 1e-9):
            return None
        return float(np.interp(math.log(examples), np.log(self.examples), self.losses))


def monotone(losses: Sequence[float]) -> tuple[float, ...]:
    """The closest non-increasing sequence (pool adjacent violators): more examples never raise the loss in the model."""
    blocks: list[list[float]] = []  # [sum, count]
    for value in losses:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return tuple(v for total, count in blocks for v in [total / count] * int(count))


def _curve(points: Mapping[int, float]) -> Curve:
    examples = sorted(points)
    return Curve(tuple(float(e) for e in examples), monotone([points[e] for e in examples]))


def efficiency_curves(
    trials: list[FrozenTrial], seed_runs: Mapping[int, Mapping[int, float]],
) -> tuple[int, int, dict[int, Curve]] | None:
    """(smallest batch size, full budget, seed -> curve) from the efficiency runs and that batch size's seed re-runs."""
    by_seed: dict[int, dict[int, float]] = defaultdict(dict)
    small: int | None = None
    budget: int | None = None
    for t in trials:
        record = TrialRecord.of(t)
        if record.frontier_role == SEED and record.budget_examples:
            budget = record.budget_examples  # every seed re-run trains the study's whole budget
        if t.state == TrialState.COMPLETE and record.frontier_role == EFFICIENCY and is_finite(t.value) and record.budget_examples:
            small = Hyperparams.of(t).batch_size
            by_seed[record.frontier_index or 0][record.budget_examples] = t.value  # type: ignore[assignment]
    if small is None or budget is None:
        return None
    for seed, loss in seed_runs.get(small, {}).items():
        by_seed[seed][budget] = loss
    curves = {k: _curve(points) for k, points in by_seed.items() if len(points) >= 2 and budget in points}
    return (small, budget, curves) if curves else None


def mean_curve(curves: Mapping[int, Curve]) -> Curve:
    """The seeds' mean loss at each budget all of them measured."""
    shared = set.intersection(*(set(c.examples) for c in curves.values()))
    return _curve({int(e): statistics.fmean(c.losses[c.examples.index(e)] for c in curves.values()) for e in shared})


@dataclass(frozen=True)
class Inverted:
    batch_size: int
    seed: int
    loss: float
    examples_ratio: float | None  # E / E': None when the loss is outside the curve


def invert(seed_runs: Mapping[int, Mapping[int, float]], curves: Mapping[int, Curve], small: int, budget: int) -> list[Inverted]:
    """Every frontier point above the smallest batch size, through its own seed's curve."""
    points = []
    for size in sorted(seed_runs):
        if size <= small:
            continue
        for seed, loss in sorted(seed_runs[size].items()):
            if seed in curves:
                needed = curves[seed].examples_for(loss)
                points.append(Inverted(size, seed, loss, budget / needed if needed else None))
    return points


@dataclass(frozen=True)
class CriticalFit:
    b_crit: float | None  # None: the slope is not positive (no measurable cost of larger batches)
    ci95: tuple[float, float | None] | None  # (low, high); high None: the interval reaches infinity
    points: int


def fit_b_crit(points: list[Inverted], small: int) -> CriticalFit | None:
    """Regression through the origin of r - 1 on (B - r b): the slope is 1 / B_crit."""
    pairs = [(p.batch_size - p.examples_ratio * small, p.examples_ratio - 1) for p in points if p.examples_ratio is not None]
    if len(pairs) < 2 or not any(x for x, _ in pairs):
        return None
    sxx = math.fsum(x * x for x, _ in pairs)
    slope = math.fsum(x * y for x, y in pairs) / sxx
    residual = math.fsum((y - slope * x) ** 2 for x, y in pairs) / (len(pairs) - 1)
    half = t975(len(pairs) - 1) * math.sqrt(residual / sxx)
    low_slope, high_slope = slope - half, slope + half
    if high_slope <= 0:
        return CriticalFit(None, None, len(pairs))
    interval = (1 / high_slope, 1 / low_slope if low_slope > 0 else None)
    return CriticalFit(1 / slope if slope > 0 else None, interval, len(pairs))


def noise_by_progress(trajectory: Sequence[tuple[float, float]], batch_size: int) -> tuple[list[float], list[float]]:
    """The probe's (examples seen, B_simple) along its run at `batch_size`, as (progress m, B_noise) pairs.

    The probe's own run is converted with the same progress equation it feeds, so the prediction
    does not depend on the batch size the probe trained at."""
    examples, noise = [e for e, _ in trajectory], [b for _, b in trajectory]
    step = max(examples[-1] / PROGRESS_STEPS, 1.0)
    progress, m, e = [], 0.0, 0.0
    for mark in examples:
        while e + 1e-9 < mark:
            dx = min(step, mark - e)
            m += dx / (1 + batch_size / np.interp(e + dx / 2, examples, noise))
            e += dx
        progress.append(m)
    return progress, noise


def progress_after(examples: float, batch_size: int, progress: Sequence[float], noise: Sequence[float]) -> float:
    """Small-batch examples' worth of progress after `examples` at `batch_size` (Euler on dm/dE)."""
    m, step = 0.0, examples / PROGRESS_STEPS
    for _ in range(PROGRESS_STEPS):
        m += step / (1 + batch_size / np.interp(m, progress, noise))
    return m


def predicted_frontier(
    curve: Curve, small: int, budget: int, sizes: Sequence[int], trajectory: Sequence[tuple[float, float]], probe_batch: int,
) -> dict[int, float | None]:
    """L(B) predicted from B_simple: L_small at the examples the smallest batch size needs for B's progress
    (None where that falls outside the measured curve)."""
    progress, noise = noise_by_progress(trajectory, probe_batch)
    small_progress = [progress_after(e, small, progress, noise) for e in curve.examples]
    predicted: dict[int, float | None] = {}
    for size in sizes:
        target = progress_after(budget, size, progress, noise)
        if target < small_progress[0] or small_progress[-1] <= small_progress[0]:
            predicted[size] = None
            continue
        examples = float(np.interp(target, small_progress, curve.examples))  # progress is nearly linear in examples
        predicted[size] = curve.loss_at(examples)
    return predicted


@dataclass(frozen=True)
class CriticalBatch:
    """What `summary.json` calls `critical_batch`: measured and predicted, each with why it is missing."""

    b_simple: float | None
    b_simple_loss: float | None  # the training loss at which B_simple was measured
    b_crit_empirical: float | None
    b_crit_ci95: tuple[float, float | None] | None
    ratio: float | None  # b_crit_empirical / b_simple
    smallest_batch: int | None
    budget_examples: int | None
    curve: list[dict[str, float]] = field(default_factory=list)  # mean over seeds: examples, val_loss
    points: list[dict[str, Any]] = field(default_factory=list)  # the inverted frontier points
    outside_curve: int = 0
    predicted: dict[int, float | None] = field(default_factory=dict)
    b_simple_trajectory: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trajectory(probe: ProbeResult | None) -> list[ProbePoint]:
    points = probe.points if probe else ()
    return [p for p in points if p.b_simple is not None and is_finite(p.b_simple) and p.b_simple > 0]


def critical_batch(trials: list[FrozenTrial], seed_runs: Mapping[int, Mapping[int, float]], probe: ProbeResult | None) -> CriticalBatch:
    """The measured B_crit (from the efficiency curve and the frontier) and the probe's B_simple, with the prediction."""
    reasons: list[str] = []
    trajectory = _trajectory(probe)
    b_simple, b_simple_loss = (trajectory[-1].b_simple, trajectory[-1].b_simple_loss) if trajectory else (None, None)
    if probe is None:
        reasons.append("b_simple: no noise-scale probe on this study (python -m search.probe --study NAME)")
    elif b_simple is None:
        reasons.append("b_simple: the probe's |G|^2 estimates were not positive (more --measurements)")
    found = efficiency_curves(trials, seed_runs)
    if found is None:
        reasons.append("b_crit_empirical: no data-efficiency curve (a frontier study with efficiency_curve: true, run to its end)")
        return CriticalBatch(b_simple, b_simple_loss, None, None, None, None, None, b_simple_trajectory=[asdict(p) for p in trajectory], reasons=reasons)
    small, budget, curves = found
    points = invert(seed_runs, curves, small, budget)
    fit = fit_b_crit(points, small)
    if fit is None:
        reasons.append("b_crit_empirical: fewer than two frontier points inside the efficiency curve")
    elif fit.b_crit is None:
        reasons.append("b_crit_empirical: larger batches cost no measurable examples here (the fitted slope is not positive)")
    mean = mean_curve(curves)
    sizes = sorted(seed_runs)
    predicted = predicted_frontier(mean, small, budget, sizes, [(p.examples_seen, p.b_simple) for p in trajectory],  # type: ignore[misc]
                                   probe.batch_size) if trajectory and probe else {}
    b_crit = fit.b_crit if fit else None
    return CriticalBatch(
        b_simple, b_simple_loss, b_crit, fit.ci95 if fit and b_crit else None,
        b_crit / b_simple if b_crit and b_simple else None, small, budget,
        curve=[{"examples": e, "val_loss": loss} for e, loss in zip(mean.examples, mean.losses)],
        points=[asdict(p) for p in points], outside_curve=sum(p.examples_ratio is None for p in points),
        predicted=predicted, b_simple_trajectory=[asdict(p) for p in trajectory], reasons=reasons,
    )


def doubling_cost(batch_size: float, b_crit: float) -> float:
    """Extra examples (a fraction) to reach the same loss at 2B instead of B, under E = E_min (1 + B / B_crit)."""
    return (1 + 2 * batch_size / b_crit) / (1 + batch_size / b_crit) - 1


def critical_sentences(result: CriticalBatch, sizes: Sequence[int]) -> list[str]:
    """The report's "why" in words, only as far as the measurements carry it."""
    lines = []
    if result.b_crit_empirical is not None and result.b_crit_ci95 is not None:
        b_crit = result.b_crit_empirical
        low, high = result.b_crit_ci95
        interval = f"95% interval {low:,.0f} to {high:,.0f}" if high is not None else f"95% interval from {low:,.0f} up, unbounded above"
        above = [b for b in sizes if b >= b_crit]
        example = (
            f"; from {above[-1] // 2:,} to {above[-1]:,} here about {doubling_cost(above[-1] / 2, b_crit):.0%}" if above and above[-1] // 2 >= min(sizes) else ""
        )
        lines.append(
            f"Critical batch size, measured: B_crit ≈ {b_crit:,.0f} ({interval}), from {sum(p['examples_ratio'] is not None for p in result.points)} "
            f"frontier points inverted through the data-efficiency curve of batch size {result.smallest_batch:,} "
            f"(trained on 1/8 to all of the {result.budget_examples:,} examples). Up to about B_crit/{DOUBLING_CHEAP} "
            f"({b_crit / DOUBLING_CHEAP:,.0f}) a larger batch costs almost no extra examples (a doubling at most "
            f"{doubling_cost(b_crit / DOUBLING_CHEAP, b_crit):.0%}); at B_crit each doubling costs 50% more examples to reach the same loss, "
            f"and far beyond it nearly 100%{example}."
        )
        if result.outside_curve:
            lines.append(
                f"{result.outside_curve} frontier point(s) lost more than batch size {result.smallest_batch:,} does with 1/8 of the "
                "budget: they need over 8x the examples, lie outside the curve and are left out of the fit."
            )
    if result.b_simple is not None:
        loss = f" at training loss {result.b_simple_loss:.3f}" if is_finite(result.b_simple_loss) else ""
        words = (
            f"The noise-scale probe measured B_simple = {result.b_simple:,.0f}{loss} (the end of its run); B_simple is a proxy for "
            "B_crit, exact only when the Hessian is proportional to the identity, and it grows as the loss falls"
        )
        if result.ratio is not None:
            words += f"; measured B_crit / B_simple = {result.ratio:.2g}"
        lines.append(words + ".")
    lines += [f"Not measured: {reason}." for reason in result.reasons]
    return lines
