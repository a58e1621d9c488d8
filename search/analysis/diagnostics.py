"""What the literature predicts: the gradient noise scale's critical batch size, sharp minima and the generalization gap."""
from __future__ import annotations

import statistics
from typing import Any, Callable, Mapping

from optuna.trial import FrozenTrial

from search.analysis.per_batch_size import BatchSizeResult, within
from search.analysis.scaling import FIT_WITHIN
from search.analysis.trials import loss_bound
from search.record import PROBE_PREFIX, TrialRecord, is_finite
from search.store.trials import is_completed

# The empirical knee: the largest batch size whose best loss is within this fraction of the best.
KNEE_WITHIN = 0.05
# Prediction and knee "agree" when they are within this factor of each other (one power of two).
AGREE_FACTOR = 2.0

# A diagnostic of a trial: one field of its record.
Diagnostic = Callable[[TrialRecord], "float | None"]
# (value, what it is in words), in the order the summary and the report give them.
DIAGNOSTICS: list[tuple[Diagnostic, str]] = [
    (lambda record: record.sharpness, "Sharpness (the top Hessian eigenvalue of the training loss)"),
    (lambda record: record.generalization_gap, "The generalization gap (validation minus training-subset loss)"),
]


def latest_probe(study_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The newest noise-scale probe stored on the study (keys sort by their UTC time)."""
    keys = sorted(k for k in study_attrs if k.startswith(PROBE_PREFIX))
    return study_attrs[keys[-1]] if keys else None


def empirical_knee(results: list[BatchSizeResult], tolerance: float = KNEE_WITHIN) -> int | None:
    """The largest batch size whose best final validation loss is within `tolerance` of the best."""
    near = within(results, tolerance)
    return max(r.batch_size for r in near) if near else None


def diagnosed(trials: list[FrozenTrial], value: Diagnostic) -> list[tuple[int, float]]:
    """(batch size, the diagnostic's value) for completed trials that have a finite one."""
    points = [(int(t.params["batch_size"]), value(TrialRecord.of(t))) for t in trials if is_completed(t)]
    return [(b, float(v)) for b, v in points if is_finite(v)]  # type: ignore[arg-type]


def median_by_size(points: list[tuple[int, float]]) -> dict[int, float]:
    sizes = sorted({b for b, _ in points})
    return {b: statistics.median(v for s, v in points if s == b) for b in sizes}


def good_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Completed trials within `FIT_WITHIN` of the best loss: one that barely learned sits on a flat plateau,
    and its sharpness says nothing about minima."""
    done = [t for t in trials if is_completed(t)]
    if not done:
        return []
    bound = loss_bound(min(t.value for t in done), FIT_WITHIN)  # type: ignore[type-var]
    return [t for t in done if t.value <= bound]  # type: ignore[operator]


def diagnostics_summary(trials: list[FrozenTrial], results: list[BatchSizeResult], probe: Mapping[str, Any] | None) -> list[str]:
    """What the noise-scale probe predicted against the knee, and how sharpness and the gap move with batch size."""
    lines = []
    knee = empirical_knee(results)
    critical = probe.get("critical_batch_size") if probe else None
    if probe is None:
        lines.append("No noise-scale probe has been run on this study: `python -m search.probe --study NAME` predicts the critical batch size.")
    elif not isinstance(critical, (int, float)):
        lines.append("The noise-scale probe could not estimate the noise scale (its |G|^2 estimate was not positive).")
    else:
        low, high = probe["suggested_range"]
        words = (
            f"The gradient noise scale probe (McCandlish et al. 2018) measured B_simple = {critical:,.0f} after "
            f"{probe['train_examples']:,} examples at batch size {probe['batch_size']:,}, predicting a critical batch size "
            f"of about {critical:,.0f} and a useful search range of {low:,.0f} to {high:,.0f}."
        )
        if knee is not None:
            agree = 1 / AGREE_FACTOR <= knee / critical <= AGREE_FACTOR
            words += (
                f" The empirical knee, the largest batch size whose best loss is within {KNEE_WITHIN:.0%} of the best, is "
                f"{knee:,}: {'within' if agree else 'not within'} a factor {AGREE_FACTOR:g} of the prediction"
                f"{'' if agree else (', larger' if knee > critical else ', smaller')}."
            )
        lines.append(words)
    good = good_trials(trials)
    for value, what in DIAGNOSTICS:
        medians = median_by_size(diagnosed(good, value))
        if len(medians) >= 2:
            (small, first), (large, last) = next(iter(medians.items())), list(medians.items())[-1]
            lines.append(
                f"{what} is {first:.3g} at batch size {small:,} and {last:.3g} at {large:,} (median of the completed trials "
                f"within {FIT_WITHIN:.0%} of the best loss)."
            )
    return lines
