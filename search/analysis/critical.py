"""The critical batch size, measured and predicted (McCandlish et al. 2018, arXiv 1812.06162).

The model: at batch size B, reaching a given loss takes E(B) = E_min (1 + B / B_crit) examples,
so at a fixed budget E a batch size B makes the progress of E / (1 + B / B_crit) small-batch
examples, and the loss rises monotonically with B; B_crit is where a batch costs twice the
examples. A frontier study measures it directly:

* the data-efficiency curve L_small(E'): the smallest batch size b's best configuration trained
  with full schedules on E/32 ... E/2 and E examples (`search.study.frontier`), per seed, its
  learning rate re-tuned at each share by a sweep on a seed of its own (`sweeps`: where the pick
  lies on the sweep's edge, the curve there may still be under-tuned, which biases B_crit up);
* each frontier point (batch size B, seed k, loss L) inverted through seed k's curve gives the
  examples b needed for the same loss, E' = L_small^-1(L), and r = E / E'. Under the model
  r = (1 + B/B_crit) / (1 + b/B_crit), i.e. r - 1 = (B - r b) / B_crit: a regression through the
  origin gives 1/B_crit with a t-based 95% interval (with b << B_crit this is the familiar
  E/E_eff - 1 = B/B_crit). A loss worse than the curve's smallest budget needs more than E over
  that budget (32x) in examples: such a point is outside the curve and enters the fit as censored.

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
from scipy.optimize import minimize, minimize_scalar
from scipy.stats import f as f_distribution
from scipy.stats import norm

from search.record import (
    EFFICIENCY,
    LR,
    REFERENCE,
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


@dataclass(frozen=True)
class Sweep:
    """The learning-rate sweep at one share of the budget: every rate tried and the one the curve trained."""

    fraction: float
    rates: tuple[float, ...]  # completed sweep points, ascending
    losses: tuple[float, ...]  # their final validation losses (one seed)
    chosen: float  # the efficiency runs' learning rate
    full_budget: float | None  # the whole budget's best, which the sweep multiplies

    @property
    def at_edge(self) -> bool:
        """The pick is the sweep's smallest or largest rate: the best may lie beyond it."""
        return len(self.rates) > 1 and self.chosen in (self.rates[0], self.rates[-1])


def sweeps(trials: list[FrozenTrial]) -> list[Sweep]:
    """Each share's sweep (trials: without superseded re-runs), in ascending share."""
    points: dict[float, dict[float, float]] = defaultdict(dict)
    chosen: dict[float, float] = {}
    of: int | None = None  # the search trial the curve re-runs
    for t in trials:
        record = TrialRecord.of(t)
        if t.state != TrialState.COMPLETE or LR not in t.params or not record.frontier_fraction:
            continue
        if record.frontier_role == REFERENCE and is_finite(t.value):
            points[record.frontier_fraction][float(t.params[LR])] = t.value  # type: ignore[assignment]
        elif record.frontier_role == EFFICIENCY:
            chosen[record.frontier_fraction], of = float(t.params[LR]), record.frontier_of
    full = next((float(t.params[LR]) for t in trials if t.number == of and LR in t.params), None)
    return [
        Sweep(f, tuple(sorted(points[f])), tuple(points[f][r] for r in sorted(points[f])), chosen[f], full)
        for f in sorted(chosen) if points.get(f)
    ]


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
    b_crit: float | None  # None: larger batches cost no measurable examples (no finite fit)
    ci95: tuple[float, float | None] | None  # cluster bootstrap over seeds; high None: unbounded
    points: int  # inside the curve
    censored: int  # outside it: a lower bound on their examples ratio, not dropped
    lack_of_fit_p: float | None  # F-test of one B_crit against a free ratio per batch size (None: too few repeats)
    per_batch_size: dict[int, tuple[float | None, float | None, float | None]]  # B -> implied B_crit, 95% low, high


BOOTSTRAP_REPLICATES = 300


def _predicted_log_ratio(sizes: np.ndarray, small: int, b_crit: float) -> np.ndarray:
    return np.log1p(sizes / b_crit) - math.log1p(small / b_crit)


def _tobit_fit(points: list[Inverted], small: int, max_ratio: float) -> float | None:
    """Maximum likelihood of B_crit with Gaussian noise in log r; a point outside the curve (r > max_ratio) enters as
    censored, P(log r > log max_ratio), rather than being dropped (dropping it keeps only the lucky seeds: B_crit up).
    Without censored points this is least squares in log r, a one-dimensional search."""
    seen = np.array([p.batch_size for p in points if p.examples_ratio is not None], dtype=float)
    y = np.log([p.examples_ratio for p in points if p.examples_ratio is not None])
    cut = np.array([p.batch_size for p in points if p.examples_ratio is None], dtype=float)
    if len(seen) + len(cut) < 2:
        return None
    bounds = (math.log(small / 100), math.log(small * 1e6))

    def squares(log_b_crit: float) -> float:
        return float(np.sum((y - _predicted_log_ratio(seen, small, math.exp(log_b_crit))) ** 2))

    start = minimize_scalar(squares, bounds=bounds, method="bounded", options={"xatol": 1e-7}).x if len(seen) else math.log(small * 16.0)
    if len(cut):
        def negative_log_likelihood(theta: np.ndarray) -> float:
            b_crit, sigma = math.exp(min(max(theta[0], bounds[0]), bounds[1])), max(math.exp(theta[1]), 1e-6)
            nll = -float(np.sum(norm.logpdf(y, _predicted_log_ratio(seen, small, b_crit), sigma))) if len(seen) else 0.0
            return nll - float(np.sum(norm.logsf(math.log(max_ratio), _predicted_log_ratio(cut, small, b_crit), sigma)))

        spread = math.log(max(math.sqrt(squares(start) / max(len(seen), 1)), 1e-3))
        start = minimize(negative_log_likelihood, [start, spread], method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 1000}).x[0]
    b_crit = math.exp(min(max(start, bounds[0]), bounds[1]))
    return b_crit if b_crit < small * 1e5 else None  # at the bound: larger batches cost nothing measurable


def _lack_of_fit(points: list[Inverted], small: int, b_crit: float) -> float | None:
    """F-test of the one-B_crit model against the saturated model (a free mean log r per batch size), inside the curve."""
    groups: dict[int, list[float]] = defaultdict(list)
    for p in points:
        if p.examples_ratio is not None:
            groups[p.batch_size].append(math.log(p.examples_ratio))
    n, g = sum(len(v) for v in groups.values()), len(groups)
    pure = math.fsum((x - statistics.fmean(v)) ** 2 for v in groups.values() for x in v)
    if n - g < 1 or g < 2 or pure <= 0:
        return None
    model = math.fsum((x - float(_predicted_log_ratio(np.array([size]), small, b_crit)[0])) ** 2 for size, v in groups.items() for x in v)
    statistic = ((model - pure) / (g - 1)) / (pure / (n - g))
    return float(f_distribution.sf(statistic, g - 1, n - g))


def _implied(points: list[Inverted], small: int) -> dict[int, tuple[float | None, float | None, float | None]]:
    """Each batch size's own B_crit from its mean log r (r - 1 = (B - r b) / B_crit), with a t interval over its seeds."""
    implied: dict[int, tuple[float | None, float | None, float | None]] = {}
    by_size: dict[int, list[float]] = defaultdict(list)
    for p in points:
        if p.examples_ratio is not None:
            by_size[p.batch_size].append(math.log(p.examples_ratio))

    def solve(size: int, log_r: float) -> float | None:
        r = math.exp(log_r)
        return (size - r * small) / (r - 1) if r > 1 and size > r * small else None

    for size, logs in sorted(by_size.items()):
        mean = statistics.fmean(logs)
        if len(logs) < 2:
            implied[size] = (solve(size, mean), None, None)
            continue
        half = t975(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        implied[size] = (solve(size, mean), solve(size, mean + half), solve(size, mean - half))  # a larger r: a smaller B_crit
    return implied


def fit_b_crit(points: list[Inverted], small: int, max_ratio: float = 8.0, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> CriticalFit | None:
    """B_crit by censored maximum likelihood in log r, its 95% interval by a cluster bootstrap over seeds (each seed's
    points share its efficiency curve, so they are resampled together), and a lack-of-fit test of the one-B_crit model."""
    inside = sum(p.examples_ratio is not None for p in points)
    if inside < 2:
        return None
    b_crit = _tobit_fit(points, small, max_ratio)
    seeds = sorted({p.seed for p in points})
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(replicates if len(seeds) > 1 else 0):
        drawn = rng.choice(seeds, size=len(seeds))
        sample = [Inverted(p.batch_size, index, p.loss, p.examples_ratio) for index, s in enumerate(drawn) for p in points if p.seed == s]
        estimates.append(_tobit_fit(sample, small, max_ratio) if sum(q.examples_ratio is not None for q in sample) >= 2 else None)
    finite = np.log([e for e in estimates if e is not None])
    ci95: tuple[float, float | None] | None = None
    if len(finite) > 1 and b_crit is not None:
        # On the log scale, the bootstrap's spread with Student's t over the clusters and the small-sample factor
        # sqrt(G / (G - 1)): a percentile interval over few seeds is too narrow (it covered 87 of 100 planted values).
        clusters = len(seeds)
        half = t975(clusters - 1) * float(np.std(finite, ddof=1)) * math.sqrt(clusters / (clusters - 1))
        unbounded = 1 - len(finite) / len(estimates) > 0.025  # more than 2.5% of the replicates found no finite B_crit
        ci95 = (math.exp(math.log(b_crit) - half), None if unbounded else math.exp(math.log(b_crit) + half))
    return CriticalFit(
        b_crit, ci95, inside, len(points) - inside,
        _lack_of_fit(points, small, b_crit) if b_crit is not None else None, _implied(points, small),
    )


def b_simple_at_loss(trajectory: Sequence[ProbePoint], loss: float) -> tuple[float | None, float | None]:
    """B_simple and its standard error read at `loss` on the probe's trajectory (interpolated in the training loss at
    each estimate), so that B_crit / B_simple compares the two at the same loss; None outside the trajectory."""
    points = sorted((p.b_simple_loss, p.b_simple, p.stderr) for p in trajectory if is_finite(p.b_simple_loss) and is_finite(p.b_simple))
    if len(points) < 2 or not points[0][0] <= loss <= points[-1][0]:
        return None, None
    losses = [q[0] for q in points]
    value = float(np.interp(loss, losses, [q[1] for q in points]))
    errors = [q[2] for q in points]
    se = float(np.interp(loss, losses, errors)) if all(is_finite(e) for e in errors) else None
    return value, se


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
    b_crit_ci95: tuple[float, float | None] | None  # cluster bootstrap over seeds
    ratio: float | None  # b_crit_empirical / b_simple_at_loss
    smallest_batch: int | None
    budget_examples: int | None
    lack_of_fit_p: float | None = None  # one B_crit against a free ratio per batch size; below 0.05 the one number is rejected
    b_crit_per_batch_size: dict[int, tuple[float | None, float | None, float | None]] = field(default_factory=dict)  # B -> implied, low, high
    censored: int = 0  # frontier points outside the efficiency curve, fitted as lower bounds
    matched_loss: float | None = None  # the median loss of the inverted frontier points: where B_crit is measured
    b_simple_at_loss: float | None = None  # B_simple read on the probe's trajectory at matched_loss
    b_simple_se: float | None = None
    curve: list[dict[str, float]] = field(default_factory=list)  # mean over seeds: examples, val_loss
    points: list[dict[str, Any]] = field(default_factory=list)  # the inverted frontier points
    outside_curve: int = 0
    predicted: dict[int, float | None] = field(default_factory=dict)
    b_simple_trajectory: list[dict[str, Any]] = field(default_factory=list)
    # The learning-rate sweep re-tuning the curve at each share: fraction, rates, losses, chosen, full_budget, at_edge.
    sweeps: list[dict[str, Any]] = field(default_factory=list)
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
    max_ratio = budget / min(min(c.examples) for c in curves.values())
    fit = fit_b_crit(points, small, max_ratio)
    if fit is None:
        reasons.append("b_crit_empirical: fewer than two frontier points inside the efficiency curve")
    elif fit.b_crit is None:
        reasons.append("b_crit_empirical: larger batches cost no measurable examples here (no finite fit)")
    inside = [p.loss for p in points if p.examples_ratio is not None]
    matched = statistics.median(inside) if inside else None
    at_loss, at_loss_se = b_simple_at_loss(trajectory, matched) if matched is not None else (None, None)
    if trajectory and matched is not None and at_loss is None:
        reasons.append("b_simple_at_loss: the probe's trajectory does not reach the loss where B_crit is measured")
    mean = mean_curve(curves)
    sizes = sorted(seed_runs)
    predicted = predicted_frontier(mean, small, budget, sizes, [(p.examples_seen, p.b_simple) for p in trajectory],  # type: ignore[misc]
                                   probe.batch_size) if trajectory and probe else {}
    b_crit = fit.b_crit if fit else None
    return CriticalBatch(
        b_simple, b_simple_loss, b_crit, fit.ci95 if fit and b_crit else None,
        b_crit / at_loss if b_crit and at_loss else None, small, budget,
        lack_of_fit_p=fit.lack_of_fit_p if fit else None, b_crit_per_batch_size=fit.per_batch_size if fit else {},
        censored=fit.censored if fit else 0, matched_loss=matched, b_simple_at_loss=at_loss, b_simple_se=at_loss_se,
        curve=[{"examples": e, "val_loss": loss} for e, loss in zip(mean.examples, mean.losses)],
        points=[asdict(p) for p in points], outside_curve=sum(p.examples_ratio is None for p in points),
        predicted=predicted, b_simple_trajectory=[asdict(p) for p in trajectory],
        sweeps=[{**asdict(w), "at_edge": w.at_edge} for w in sweeps(trials)], reasons=reasons,
    )


def doubling_cost(batch_size: float, b_crit: float) -> float:
    """Extra examples (a fraction) to reach the same loss at 2B instead of B, under E = E_min (1 + B / B_crit)."""
    return (1 + 2 * batch_size / b_crit) / (1 + batch_size / b_crit) - 1


def critical_sentences(result: CriticalBatch, sizes: Sequence[int]) -> list[str]:
    """The report's "why" in words, only as far as the measurements carry it."""
    lines = []
    rejected = result.lack_of_fit_p is not None and result.lack_of_fit_p < 0.05
    if result.b_crit_empirical is not None and result.b_crit_ci95 is not None:
        b_crit = result.b_crit_empirical
        low, high = result.b_crit_ci95
        interval = f"95% bootstrap interval over seeds {low:,.0f} to {high:,.0f}" if high is not None else f"95% bootstrap interval from {low:,.0f} up, unbounded above"
        inside = sum(p["examples_ratio"] is not None for p in result.points)
        fit_words = (
            f"Critical batch size, measured: B_crit ≈ {b_crit:,.0f} ({interval}), fitted in log r to {inside} frontier points inverted "
            f"through the data-efficiency curve of batch size {result.smallest_batch:,}"
            + (f" and {result.censored} beyond it, as lower bounds" if result.censored else "")
            + (f", at validation loss about {result.matched_loss:.3f}" if result.matched_loss is not None else "") + "."
        )
        if rejected:
            per = ", ".join(
                f"B = {size:,}: {_maybe(value)} ({_maybe(lo)} to {_maybe(hi)})" for size, (value, lo, hi) in sorted(result.b_crit_per_batch_size.items())
            )
            lines.append(
                fit_words + f" One B_crit does not fit these points (lack-of-fit F-test p = {result.lack_of_fit_p:.2g}), so that number and its "
                f"interval describe no batch size well; the B_crit each batch size implies (95% intervals over its seeds): {per}."
            )
        else:
            lof = f" (lack-of-fit F-test p = {result.lack_of_fit_p:.2g}: one B_crit is not rejected)" if result.lack_of_fit_p is not None else ""
            lines.append(
                fit_words + lof + f" Up to about B_crit/{DOUBLING_CHEAP} ({b_crit / DOUBLING_CHEAP:,.0f}) a larger batch costs almost no extra "
                f"examples (a doubling at most {doubling_cost(b_crit / DOUBLING_CHEAP, b_crit):.0%}); at B_crit each doubling costs 50% more examples to "
                "reach the same loss, and far beyond it nearly 100%."
            )
    if result.sweeps:
        picks = ", ".join(
            f"E×{w['fraction']:g}: {w['chosen']:.3g}" + (f" (×{w['chosen'] / w['full_budget']:.3g})" if w["full_budget"] else "")
            for w in result.sweeps
        )
        edges = ", ".join(f"E×{w['fraction']:g}" for w in result.sweeps if w["at_edge"])
        lines.append(
            f"The efficiency curve's learning rate was re-tuned at each share of the budget E, by a sweep of up to "
            f"{max(len(w['rates']) for w in result.sweeps)} rates on a seed of its own, the pick trained on the paired seeds "
            f"(the pick, and its multiple of the whole budget's best): {picks}."
            + (f" At {edges} the pick is the sweep's edge, so the curve there may still be under-tuned, which would make B_crit too high." if edges else "")
        )
    if result.b_simple is not None:
        words = (
            f"The noise-scale probe measured B_simple = {result.b_simple:,.0f}"
            + (f" at training loss {result.b_simple_loss:.3f}" if is_finite(result.b_simple_loss) else "")
            + " at the end of its run; B_simple is a proxy for B_crit, exact only when the Hessian is proportional to the identity"
        )
        if result.b_simple_at_loss is not None and result.matched_loss is not None:
            se = f" ± {result.b_simple_se:,.0f}" if is_finite(result.b_simple_se) else ""
            words += f"; read at the loss where B_crit was measured ({result.matched_loss:.3f}) it is {result.b_simple_at_loss:,.0f}{se}"
            if result.ratio is not None:
                words += f", and B_crit / B_simple there is {result.ratio:.2g}"
        lines.append(words + ".")
    lines += [f"Not measured: {reason}." for reason in result.reasons]
    return lines


def _maybe(value: float | None) -> str:
    return "none" if value is None else f"{value:,.0f}"
