"""The batch-size frontier of a `strategy: frontier` study, with honest uncertainty.

Each batch size's row is the mean over its seed re-runs (the search's own best value is a
minimum over draws, biased low) with a t-based 95% interval. Batch sizes are compared through
paired differences (seed k of every batch size starts from the same weights and example order),
which removes the noise the two runs share. Every sentence the report states is decided here by a
test. The reference is the best batch size by the search, whose seeds are not the re-runs', so it is
not tested on the seeds that chose it. "B1 is better than B2" only when a paired t-test rejects
equality after Holm's correction across the batch sizes compared; "non-inferior" (the recommendation's
ground) only when the one-sided 95% upper bound of the paired difference lies within the margin
(`frontier.margin` of the reference's loss), never from a failed difference test; a scaling rule only
when the exponent's interval holds it.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from scipy.stats import t as student_t

from search.analysis.scaling import SCALING_RULES, ScalingFit, fit_exponent
from search.record import (
    SEARCH,
    SEED,
    Hyperparams,
    TrialRecord,
    batch_size_of,
    is_finite,
)
from search.stats import Interval, mean_ci95, t975


@dataclass(frozen=True)
class FrontierRow:
    """One batch size: its best configuration, measured over paired seeds."""

    batch_size: int
    n_seeds: int
    val_loss_mean: float
    val_loss_ci95: float | None
    val_acc_mean: float | None
    val_acc_ci95: float | None
    lr: float
    effective_lr: float
    momentum: float
    steps: int | None
    examples_per_second: float | None
    search_trials: int  # finished (complete or pruned) search trials this configuration was chosen from
    source_trial: int | None  # the search trial whose configuration the seeds re-run

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _role(trial: FrozenTrial) -> str | None:
    return TrialRecord.of(trial).frontier_role


def seed_losses(trials: list[FrozenTrial]) -> dict[int, dict[int, float]]:
    """Batch size -> seed number -> final validation loss, over completed seed re-runs."""
    losses: dict[int, dict[int, float]] = defaultdict(dict)
    for t in trials:
        record = TrialRecord.of(t)
        if t.state == TrialState.COMPLETE and record.frontier_role == SEED and is_finite(t.value) and record.frontier_index is not None:
            losses[Hyperparams.of(t).batch_size][record.frontier_index] = t.value  # type: ignore[assignment]
    return dict(losses)


def frontier_rows(trials: list[FrozenTrial]) -> list[FrontierRow]:
    """One row per batch size with at least one completed seed re-run, by batch size."""
    rows = []
    for size in sorted(seed_losses(trials)):
        runs = [
            t for t in trials
            if t.state == TrialState.COMPLETE and _role(t) == SEED and batch_size_of(t) == size and is_finite(t.value)
        ]
        records = [TrialRecord.of(t) for t in runs]
        loss = mean_ci95([t.value for t in runs])  # type: ignore[misc]
        accuracies = [r.final_val_acc for r in records if is_finite(r.final_val_acc)]
        acc = mean_ci95(accuracies) if accuracies else None  # type: ignore[arg-type]
        speeds = [r.examples_per_second for r in records if is_finite(r.examples_per_second)]
        searched = [
            t for t in trials
            if _role(t) == SEARCH and batch_size_of(t) == size and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        ]
        rows.append(FrontierRow(
            batch_size=size,
            n_seeds=len(runs),
            val_loss_mean=loss.mean,
            val_loss_ci95=loss.half_width,
            val_acc_mean=acc.mean if acc else None,
            val_acc_ci95=acc.half_width if acc else None,
            lr=Hyperparams.of(runs[0]).lr,
            effective_lr=records[0].effective_lr,  # type: ignore[arg-type]
            momentum=Hyperparams.of(runs[0]).momentum,
            steps=records[0].steps,
            examples_per_second=statistics.fmean(speeds) if speeds else None,  # type: ignore[arg-type]
            search_trials=len(searched),
            source_trial=records[0].frontier_of,
        ))
    return rows


def paired_difference(trials: list[FrozenTrial], larger: int, smaller: int) -> Interval | None:
    """Loss at `larger` minus loss at `smaller`, over the seeds both completed (None: no common seed)."""
    losses = seed_losses(trials)
    common = sorted(set(losses.get(larger, {})) & set(losses.get(smaller, {})))
    if not common:
        return None
    return mean_ci95([losses[larger][k] - losses[smaller][k] for k in common])


@dataclass(frozen=True)
class ExponentFit:
    """log(effective lr) against log(batch size) over the frontier's configurations, with its 95% interval."""

    exponent: float
    low: float | None  # None with two points: a slope, no interval
    high: float | None
    points: int
    rules_inside: tuple[str, ...]  # scaling rules (linear 1, square-root 0.5, constant 0) inside the interval


def exponent_fit(rows: list[FrontierRow]) -> ExponentFit | None:
    """Fitted on the frontier's per-batch-size best learning rates."""
    return with_interval(fit_exponent([(r.batch_size, r.effective_lr) for r in rows]))


def with_interval(fit: ScalingFit | None) -> ExponentFit | None:
    """A least-squares exponent with its t-based 95% interval and the scaling rules inside it."""
    if fit is None:
        return None
    if fit.stderr is None:
        return ExponentFit(fit.exponent, None, None, fit.points, ())
    half = t975(fit.points - 2) * fit.stderr
    low, high = fit.exponent - half, fit.exponent + half
    slack = 1e-9  # an exact fit has a zero-width interval: let rounding not push a rule out of it
    inside = tuple(f"{name} ({k:g})" for k, name in sorted(SCALING_RULES.items(), reverse=True) if low - slack <= k <= high + slack)
    return ExponentFit(fit.exponent, low, high, fit.points, inside)


# The default non-inferiority margin: a fraction of the reference batch size's mean loss (`frontier.margin`).
DEFAULT_MARGIN = 0.01
ALPHA = 0.05  # one-sided for non-inferiority, two-sided (Holm-adjusted) for "better"


@dataclass(frozen=True)
class Comparison:
    """One batch size against the reference, over the seeds both completed."""

    batch_size: int
    seeds: int
    difference: float | None  # mean paired loss difference, this batch size minus the reference (None: no paired seed)
    upper_bound: float | None  # its one-sided 95% upper bound (None with fewer than two paired seeds)
    p_holm: float | None  # two-sided paired t-test of a difference, Holm-adjusted across the batch sizes compared
    verdict: str  # reference | non-inferior | not shown non-inferior | untested


@dataclass(frozen=True)
class Recommendation:
    batch_size: int
    lr: float
    effective_lr: float
    momentum: float
    reason: str
    reference_batch_size: int  # the best batch size, chosen on the search's seeds
    margin: float  # the non-inferiority margin, as a fraction of the reference's mean loss
    margin_loss: float  # the same margin in loss units
    comparisons: tuple[Comparison, ...]


def reference_batch_size(trials: list[FrozenTrial], rows: list[FrontierRow]) -> int:
    """The best batch size, chosen on the search trials (their seeds are not the re-runs'): picking the best on the
    seeds it is then tested on would favour it (the winner's curse). Every batch size has the same number of search
    draws, so the choice favours none. Without completed search trials, the lowest mean over the seed re-runs."""
    measured = {r.batch_size for r in rows}
    searched: dict[int, float] = {}
    for t in trials:
        size = batch_size_of(t)
        if size in measured and _role(t) == SEARCH and t.state == TrialState.COMPLETE and is_finite(t.value):
            searched[size] = min(searched.get(size, math.inf), t.value)  # type: ignore[arg-type]
    if searched:
        return min(searched, key=lambda size: (searched[size], size))
    return min(rows, key=lambda r: r.val_loss_mean).batch_size


def holm(p_values: dict[int, float]) -> dict[int, float]:
    """Holm's step-down adjustment: adjusted p-values, monotone, controlling the family-wise error rate."""
    adjusted: dict[int, float] = {}
    running = 0.0
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    for rank, (key, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p))
        adjusted[key] = running
    return adjusted


def compare(trials: list[FrozenTrial], rows: list[FrontierRow], margin: float = DEFAULT_MARGIN) -> tuple[int, float, list[Comparison]]:
    """The reference batch size, the margin in loss units, and every batch size's comparison with the reference:
    non-inferior when the one-sided 95% upper bound of the paired difference is within the margin."""
    reference = reference_batch_size(trials, rows)
    reference_row = next(r for r in rows if r.batch_size == reference)
    margin_loss = margin * abs(reference_row.val_loss_mean)
    losses = seed_losses(trials)
    found: dict[int, tuple[int, float | None, float | None, float | None]] = {}
    for row in rows:
        if row.batch_size == reference:
            continue
        common = sorted(set(losses.get(row.batch_size, {})) & set(losses.get(reference, {})))
        diffs = [losses[row.batch_size][k] - losses[reference][k] for k in common]
        if len(diffs) < 2:
            found[row.batch_size] = (len(diffs), diffs[0] if diffs else None, None, None)
            continue
        mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
        n = len(diffs)
        se = sd / math.sqrt(n)
        upper = mean + student_t.ppf(1 - ALPHA, n - 1) * se
        p = 1.0 if se == 0 and mean == 0 else 0.0 if se == 0 else float(2 * student_t.sf(abs(mean) / se, n - 1))
        found[row.batch_size] = (n, mean, upper, p)
    adjusted = holm({size: p for size, (_, _, _, p) in found.items() if p is not None})
    comparisons = [Comparison(reference, reference_row.n_seeds, 0.0, 0.0, None, "reference")]
    for size, (n, mean, upper, _) in found.items():
        verdict = "untested" if upper is None else "non-inferior" if upper <= margin_loss else "not shown non-inferior"
        comparisons.append(Comparison(size, n, mean, upper, adjusted.get(size), verdict))
    return reference, margin_loss, sorted(comparisons, key=lambda c: c.batch_size)


def recommend(trials: list[FrozenTrial], rows: list[FrontierRow], margin: float = DEFAULT_MARGIN) -> Recommendation | None:
    """The largest batch size of the contiguous run, upward from the reference, of batch sizes non-inferior to it: on
    parallel hardware a step costs about the same whatever the batch, so it reaches the reference's loss (within the
    margin) in the fewest steps. Non-inferiority is shown, never assumed from a failed difference test."""
    if not rows:
        return None
    reference, margin_loss, comparisons = compare(trials, rows, margin)
    by_size = {c.batch_size: c for c in comparisons}
    pick_size = reference
    for size in sorted(s for s in by_size if s > reference):
        if by_size[size].verdict != "non-inferior":
            break
        pick_size = size
    pick = next(r for r in rows if r.batch_size == pick_size)
    ref_row = next(r for r in rows if r.batch_size == reference)
    stated = f"margin {margin:.1%} of the reference's loss ({margin_loss:.4f})"
    if pick_size == reference:
        larger = [by_size[s] for s in sorted(by_size) if s > reference]
        why = f"it is the best batch size by the search (chosen on the search's seeds; on the {ref_row.n_seeds} re-run seeds {_loss_text(ref_row)})"
        if larger and larger[0].upper_bound is not None:
            why += (
                f"; no larger batch size is shown non-inferior ({stated}): the next, {larger[0].batch_size:,}, differs by "
                f"{larger[0].difference:+.4f} with a one-sided 95% upper bound of {larger[0].upper_bound:+.4f}"
            )
        elif larger:
            why += f"; the next larger batch size, {larger[0].batch_size:,}, has fewer than two paired seeds, so it is not compared"
    else:
        chosen = by_size[pick_size]
        why = (
            f"it is non-inferior to batch size {reference:,}, the best by the search ({_loss_text(ref_row)}), at {stated}: "
            f"paired difference {chosen.difference:+.4f}, one-sided 95% upper bound {chosen.upper_bound:+.4f} over "
            f"{chosen.seeds} seeds, as is every batch size between them; on parallel hardware a step costs about the same "
            + (f"at any batch size, so it needs the fewest steps ({pick.steps:,} instead of {ref_row.steps:,})" if pick.steps and ref_row.steps else "at any batch size")
        )
    sentence = (
        f"Use batch size {pick.batch_size:,} with lr {pick.lr:.4g} (effective {pick.effective_lr:.4g}) and momentum "
        f"{pick.momentum:.3f} at this budget: {why}. {_doubling_cost(trials, rows, pick)}"
    )
    return Recommendation(
        pick.batch_size, pick.lr, pick.effective_lr, pick.momentum, sentence.strip(), reference, margin, margin_loss, tuple(comparisons)
    )


def _loss_text(row: FrontierRow) -> str:
    spread = f" ± {row.val_loss_ci95:.4f}" if row.val_loss_ci95 is not None else " (one seed, no interval)"
    return f"{row.val_loss_mean:.4f}{spread} over {row.n_seeds} seed{'s' if row.n_seeds != 1 else ''}"


def _doubling_cost(trials: list[FrozenTrial], rows: list[FrontierRow], pick: FrontierRow) -> str:
    """What the next larger measured batch size costs in loss, if it was measured."""
    larger = [r for r in rows if r.batch_size > pick.batch_size]
    if not larger:
        return "No larger batch size was measured, so what a larger batch would cost is unknown."
    step = larger[0]
    difference = paired_difference(trials, step.batch_size, pick.batch_size)
    factor = step.batch_size / pick.batch_size
    name = "A 2x larger batch" if factor == 2 else f"The next measured batch size ({step.batch_size:,}, {factor:g}x)"
    if difference is None or difference.half_width is None:
        return f"{name} reaches {_loss_text(step)}; with fewer than two paired seeds its cost has no interval."
    relative = difference.mean / abs(pick.val_loss_mean) if pick.val_loss_mean else float("nan")
    return (
        f"{name} costs {difference.mean:+.4f} validation loss ({relative:+.1%}; paired 95% interval "
        f"{difference.mean - difference.half_width:+.4f} to {difference.mean + difference.half_width:+.4f})."
    )


def claims(trials: list[FrozenTrial], rows: list[FrontierRow], fit: ExponentFit | None, margin: float = DEFAULT_MARGIN) -> list[str]:
    """The frontier's sentences, each one stated only where its test passes: "better" when the Holm-adjusted paired
    test rejects equality, "non-inferior" when the one-sided bound is within the margin; nothing from a failed test."""
    if not rows:
        return ["No seed re-run has completed yet, so there is no frontier: let the study finish (its seeds run last)."]
    reference, margin_loss, comparisons = compare(trials, rows, margin)
    ref_row = next(r for r in rows if r.batch_size == reference)
    lines = [f"The best batch size by the search (chosen on the search's seeds) is {reference:,}: on its {ref_row.n_seeds} re-run seeds {_loss_text(ref_row)}."]
    others = [c for c in comparisons if c.verdict != "reference"]
    for c in others:
        if c.p_holm is not None and c.p_holm < ALPHA and c.difference is not None:
            winner, loser = (reference, c.batch_size) if c.difference > 0 else (c.batch_size, reference)
            lines.append(
                f"Batch size {winner:,} is better than {loser:,}: paired difference of {c.batch_size:,} minus {reference:,} "
                f"{c.difference:+.4f} over {c.seeds} seeds, Holm-adjusted p = {c.p_holm:.3g} across {len(others)} comparisons."
            )
    non_inferior = [c for c in others if c.verdict == "non-inferior"]
    if non_inferior:
        lines.append(
            f"Non-inferior to {reference:,} at margin {margin:.1%} of its loss ({margin_loss:.4f}; one-sided 95% upper bounds): "
            + ", ".join(f"batch size {c.batch_size:,} ({c.difference:+.4f}, bound {c.upper_bound:+.4f})" for c in non_inferior) + "."
        )
    unsettled = [c for c in others if c.verdict == "not shown non-inferior" and not (c.p_holm is not None and c.p_holm < ALPHA)]
    if unsettled:
        lines.append(
            "Neither shown worse nor shown non-inferior (more seeds would tell): "
            + ", ".join(f"batch size {c.batch_size:,} ({c.difference:+.4f}, bound {c.upper_bound:+.4f})" for c in unsettled) + "."
        )
    if others and all(c.verdict == "untested" for c in others):
        lines.append("No batch size has two seeds paired with the reference yet: no comparison is stated.")
    lines.append(exponent_words(fit))
    return lines


def exponent_words(fit: ExponentFit | None, points: str = "have a frontier point") -> str:
    if fit is None:
        return f"Fewer than two batch sizes {points}, so no learning-rate scaling exponent is fitted."
    if fit.low is None:
        return (
            f"Between the two batch sizes the best effective learning rate changes as B^{fit.exponent:.2f}: a slope through "
            f"two points, with no interval, so no scaling rule is named."
        )
    inside = ", ".join(fit.rules_inside) if fit.rules_inside else "none of linear (1), square-root (0.5) or constant (0)"
    return (
        f"The best effective learning rate grows as B^{fit.exponent:.2f} (95% interval {fit.low:.2f} to {fit.high:.2f}, "
        f"{fit.points} batch sizes); scaling rules inside the interval: {inside}."
    )
