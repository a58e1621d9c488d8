"""The batch-size frontier of a `strategy: frontier` study, with honest uncertainty.

Each batch size's row is the mean over its seed re-runs (the search's own best value is a
minimum over draws, biased low) with a t-based 95% interval. Batch sizes are compared through
paired differences (seed k of every batch size starts from the same weights and example order),
which removes the noise the two runs share. Every sentence the report states is decided here by a
test: "B1 is better than B2" only when the paired interval excludes zero, "within X%" only when
X exceeds the interval's half-width, a scaling rule only when the exponent's interval holds it.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

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


@dataclass(frozen=True)
class Recommendation:
    batch_size: int
    lr: float
    effective_lr: float
    momentum: float
    reason: str


def differences_from_best(trials: list[FrozenTrial], rows: list[FrontierRow]) -> dict[int, Interval | None]:
    """Each batch size's paired difference from the best one's loss (the best's own: zero), computed once."""
    best = min(rows, key=lambda r: r.val_loss_mean)
    return {row.batch_size: paired_difference(trials, row.batch_size, best.batch_size) for row in rows}


def indistinguishable_from_best(trials: list[FrozenTrial], rows: list[FrontierRow]) -> list[int]:
    """The batch sizes whose paired difference from the best one's loss has an interval holding zero."""
    best = min(rows, key=lambda r: r.val_loss_mean)
    return [
        size for size, d in differences_from_best(trials, rows).items()
        if size == best.batch_size or (d is not None and d.half_width is not None and not d.excludes_zero)
    ]


def recommend(trials: list[FrozenTrial], rows: list[FrontierRow]) -> Recommendation | None:
    """The largest batch size statistically indistinguishable from the best: on parallel hardware a
    step costs about the same whatever the batch, so it reaches the same loss in the fewest steps."""
    if not rows:
        return None
    best = min(rows, key=lambda r: r.val_loss_mean)
    tied = indistinguishable_from_best(trials, rows)
    pick = next(r for r in rows if r.batch_size == max(tied))
    if pick is best:
        why = f"it has the lowest mean validation loss ({_loss_text(best)})"
        if len(rows) > 1 and len(tied) == 1:
            why += "; every other batch size is worse by a paired difference whose 95% interval excludes zero"
    else:
        why = (
            f"its loss ({_loss_text(pick)}) is statistically indistinguishable from the best, batch size {best.batch_size:,} "
            f"({_loss_text(best)}; paired 95% interval of the difference holds zero), and it is the largest such batch size: "
            f"on parallel hardware a step costs about the same at any batch size, so it needs the fewest steps "
            f"({pick.steps:,} instead of {best.steps:,})" if pick.steps and best.steps else "the largest such batch size"
        )
    sentence = (
        f"Use batch size {pick.batch_size:,} with lr {pick.lr:.4g} (effective {pick.effective_lr:.4g}) and momentum "
        f"{pick.momentum:.3f} at this budget: {why}. {_doubling_cost(trials, rows, pick)}"
    )
    return Recommendation(pick.batch_size, pick.lr, pick.effective_lr, pick.momentum, sentence.strip())


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


def claims(trials: list[FrozenTrial], rows: list[FrontierRow], fit: ExponentFit | None) -> list[str]:
    """The frontier's sentences, each one stated only where its test passes."""
    if not rows:
        return ["No seed re-run has completed yet, so there is no frontier: let the study finish (its seeds run last)."]
    lines = []
    best = min(rows, key=lambda r: r.val_loss_mean)
    differences = differences_from_best(trials, rows)
    better, tied = [], []
    for row in rows:
        if row is best:
            continue
        difference = differences[row.batch_size]
        if difference is None or difference.half_width is None:
            continue
        if difference.excludes_zero:
            better.append((row, difference))
        else:
            tied.append((row, difference))
    lines.append(f"The lowest mean validation loss is at batch size {best.batch_size:,}: {_loss_text(best)}.")
    for row, difference in better:
        winner, loser = (best, row) if difference.mean > 0 else (row, best)
        lines.append(
            f"Batch size {winner.batch_size:,} is better than {loser.batch_size:,}: paired difference of {row.batch_size:,} "
            f"minus {best.batch_size:,} {difference.mean:+.4f} "
            f"(95% interval {difference.mean - difference.half_width:+.4f} to {difference.mean + difference.half_width:+.4f}, "  # type: ignore[operator]
            f"{difference.n} seeds), which excludes zero."
        )
    if tied:
        lines.append(
            "Statistically indistinguishable from it (paired 95% intervals hold zero): "
            + ", ".join(f"batch size {r.batch_size:,} ({d.mean:+.4f} ± {d.half_width:.4f})" for r, d in tied) + "."
        )
        for row, difference in tied:
            bound = within_percent(difference, best.val_loss_mean)
            if bound is not None:
                lines.append(f"Batch size {row.batch_size:,} is within {bound:.0%} of the best loss (that bound exceeds its interval's half-width).")
    missing = [size for size, d in differences.items() if d is None]
    if len(rows) > 1 and len(missing) == len(rows) - 1:
        lines.append("No batch size has two seeds paired with the best one yet: no comparison is stated.")
    lines.append(exponent_words(fit))
    return lines


def within_percent(difference: Interval, best_loss: float) -> float | None:
    """The smallest whole percent X such that the loss is within X% of the best and X% of the best loss
    exceeds the interval's half-width (and its upper end); None when no such claim is warranted below 10%."""
    if difference.half_width is None or not best_loss:
        return None
    upper = (abs(difference.mean) + difference.half_width) / abs(best_loss)
    for percent in range(1, 11):
        bound = percent / 100
        if bound > upper and bound * abs(best_loss) > difference.half_width:
            return bound
    return None


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
