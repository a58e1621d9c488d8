"""What the literature predicts, measured: the noise scale, sharp minima and the generalization gap.

Raw sharpness (the top Hessian eigenvalue) is not compared between batch sizes: with batch norm
the loss does not change when the weights before it are scaled by c, while the Hessian scales by
1/c^2, and the weight norm itself moves with the batch size and learning rate. Batch sizes are
compared on the learning-rate-relative sharpness (peak lr x lambda_max over SGD's stability
threshold 2(1+m), Nesterov 2(1+m)/(1+2m): how close the run sat to the edge of stability) and on
the weight norm; the sharpness-gap relation is stated only over enough trials for an interval.
"""
from __future__ import annotations

import math
import statistics
from typing import Callable

from optuna.trial import FrozenTrial

from search.analysis.scaling import FIT_WITHIN
from search.analysis.trials import loss_bound
from search.record import SEED, Hyperparams, ProbeResult, TrialRecord, is_finite
from search.store.trials import is_completed

# The sharpness-gap correlation is stated over at least this many diagnosed trials.
MIN_CORRELATION_TRIALS = 20

# A diagnostic of a trial: one field of its record.
Diagnostic = Callable[[TrialRecord], "float | None"]
# (value, what it is in words), in the order the summary and the report give them.
DIAGNOSTICS: list[tuple[Diagnostic, str]] = [
    (lambda record: record.sharpness_lr_relative, "The learning-rate-relative sharpness (peak lr x top Hessian eigenvalue / the stability threshold)"),
    (lambda record: record.weight_norm, "The weight norm"),
    (lambda record: record.generalization_gap, "The generalization gap (validation minus training-subset loss)"),
]


def diagnosed(trials: list[FrozenTrial], value: Diagnostic) -> list[tuple[int, float]]:
    """(batch size, the diagnostic's value) for completed trials that have a finite one."""
    points = [(Hyperparams.of(t).batch_size, value(TrialRecord.of(t))) for t in trials if is_completed(t)]
    return [(b, float(v)) for b, v in points if is_finite(v)]  # type: ignore[arg-type]


def median_by_size(points: list[tuple[int, float]]) -> dict[int, float]:
    sizes = sorted({b for b, _ in points})
    return {b: statistics.median(v for s, v in points if s == b) for b in sizes}


def compared_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials whose diagnostics are compared: a frontier's seed re-runs (each its batch size's best), else
    completed trials within `FIT_WITHIN` of the best loss (one that barely learned sits on a flat plateau)."""
    done = [t for t in trials if is_completed(t)]
    seeds = [t for t in done if TrialRecord.of(t).frontier_role == SEED]
    if seeds or not done:
        return seeds
    bound = loss_bound(min(t.value for t in done), FIT_WITHIN)  # type: ignore[type-var]
    return [t for t in done if t.value <= bound]  # type: ignore[operator]


def correlation_ci95(xs: list[float], ys: list[float]) -> tuple[float, float, float] | None:
    """Pearson's r with its 95% interval (Fisher's z); None with fewer than 4 points or no spread."""
    n = len(xs)
    if n < 4 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    r = statistics.correlation(xs, ys)
    if abs(r) >= 1:
        return r, r, r
    z, half = math.atanh(r), 1.96 / math.sqrt(n - 3)
    return r, math.tanh(z - half), math.tanh(z + half)


def probe_sentence(probe: ProbeResult | None) -> str:
    """What the probe measured, labelled as what it is; the frontier's measured B_crit is `critical`'s."""
    if probe is None:
        return "No noise-scale probe has been run on this study: `python -m search.probe --study NAME` measures B_simple along a run."
    value, loss = probe.b_simple, probe.last.b_simple_loss
    if value is None or not is_finite(value):
        return "The noise-scale probe could not estimate the noise scale (its |G|^2 estimate was not positive)."
    return (
        f"The gradient noise scale probe (McCandlish et al. 2018) measured B_simple = {value:,.0f}"
        + (f" at training loss {loss:.3f}" if is_finite(loss) else "")
        + f", after {probe.train_examples:,} examples at batch size {probe.batch_size:,} "
        f"({probe.hyperparams_from}; {_probe_schedule(probe)}). B_simple is a proxy for the critical batch "
        "size, exact only when the Hessian is proportional to the identity, and it changes along training."
    )


def _probe_schedule(probe: ProbeResult) -> str:
    if probe.schedule == "constant":
        return "learning rate held constant after warm-up"
    return "learning rate decayed as in the trials, which shrinks the gradient's norm late in the run" + (
        "" if probe.schedule != "study" else " (a probe from before the constant-rate default)")


def diagnostics_summary(trials: list[FrozenTrial]) -> list[str]:
    """How the comparable diagnostics move with batch size, and the sharpness-gap relation when an interval carries it."""
    compared = compared_trials(trials)
    lines = []
    who = "seed re-runs" if any(TrialRecord.of(t).frontier_role == SEED for t in compared) else f"completed trials within {FIT_WITHIN:.0%} of the best loss"
    for value, what in DIAGNOSTICS:
        medians = median_by_size(diagnosed(compared, value))
        if len(medians) >= 2:
            (small, first), (large, last) = next(iter(medians.items())), list(medians.items())[-1]
            lines.append(f"{what} is {first:.3g} at batch size {small:,} and {last:.3g} at {large:,} (median of the {who}).")
    if any(is_finite(TrialRecord.of(t).sharpness) for t in compared):
        lines.append(
            "Raw sharpness is not compared between batch sizes: with batch norm, scaling the weights before a normalization "
            "leaves the loss unchanged and divides the Hessian by the square of the scale, and the weight norm moves with batch "
            "size and learning rate; the learning-rate-relative sharpness (1 is the edge of stability) is comparable."
        )
    if any((TrialRecord.of(t).sharpness_lr_relative or 0) > 1 for t in compared):
        lines.append(
            "Learning-rate-relative sharpness above 1 does not mean a run diverged: it is measured at the final weights, in eval "
            "mode, after the schedule's decay shrank the step (to zero under linear decay), and networks sharpen as the step shrinks; "
            "it compares how far past the peak step's stability limit each batch size's minimum lies."
        )
    pairs = [(r.sharpness_lr_relative, r.generalization_gap) for r in map(TrialRecord.of, compared)
             if is_finite(r.sharpness_lr_relative) and is_finite(r.generalization_gap)]
    if len(pairs) >= MIN_CORRELATION_TRIALS:
        found = correlation_ci95([math.log(s) for s, _ in pairs if s > 0], [g for s, g in pairs if s > 0])
        if found:
            r, low, high = found
            verdict = "holds zero: no relation is shown" if low <= 0 <= high else ("excludes zero" + (": sharper runs generalize worse" if r > 0 else ": sharper runs generalize better"))
            lines.append(
                f"Sharpness and the generalization gap over {len(pairs)} {who}: correlation of log lr-relative sharpness with the "
                f"gap r = {r:.2f}, 95% interval {low:.2f} to {high:.2f}, which {verdict}."
            )
    elif pairs:
        lines.append(
            f"The sharpness-gap relation is not stated: {len(pairs)} diagnosed trials, fewer than the {MIN_CORRELATION_TRIALS} an interval needs here."
        )
    return lines
