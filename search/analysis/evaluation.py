"""Test-set runs of `search.evaluate`, grouped per configuration: mean and spread over seeds."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from search.record import EvaluationRecord, Hyperparams


@dataclass(frozen=True)
class EvaluationResult:
    """Test-set results of one configuration over several seeds."""

    source_trial: int
    batch_size: int
    lr: float
    effective_lr: float | None
    momentum: float
    val_loss: float | None  # the source trial's final validation loss in the search
    test_acc: list[float]  # empty when the study's loss is not a classification loss
    test_loss: list[float]

    @property
    def seeds(self) -> int:
        return len(self.test_loss)


def evaluation_results(source: list[FrozenTrial], runs: list[FrozenTrial]) -> list[EvaluationResult]:
    """Group completed test-set runs by the search trial they retrain, best search trial first.

    Measurements of kept weights (`search.evaluate --from-checkpoint`) are not retrained runs: left out.
    """
    by_number = {t.number: t for t in source}
    grouped: dict[int, list[tuple[FrozenTrial, EvaluationRecord]]] = {}
    for run in runs:
        record = EvaluationRecord.of(run)
        retrained = record.checkpoint_path is None
        if run.state == TrialState.COMPLETE and retrained and record.source_trial is not None and record.test_loss is not None:
            grouped.setdefault(record.source_trial, []).append((run, record))
    results = []
    for number, group in grouped.items():
        first, first_record = group[0]
        origin = by_number.get(number)
        results.append(
            EvaluationResult(
                source_trial=number,
                batch_size=Hyperparams.of(first).batch_size,
                lr=Hyperparams.of(first).lr,
                effective_lr=first_record.effective_lr,
                momentum=Hyperparams.of(first).momentum,
                val_loss=origin.value if origin is not None else None,
                test_acc=[r.test_acc for _, r in group if r.test_acc is not None],
                test_loss=[r.test_loss for _, r in group],  # type: ignore[misc]
            )
        )
    return sorted(results, key=lambda r: (r.val_loss is None, r.val_loss, r.source_trial))


def mean_and_spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value: no spread to speak of)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def mean_spread_text(values: list[float], absent: str = "–") -> str:
    """"0.7123 ± 0.0041", "0.7123 (one seed)" when there is no spread to show, `absent` without values."""
    if not values:
        return absent
    mean, spread = mean_and_spread(values)
    return f"{mean:.4f} ± {spread:.4f}" if spread is not None else f"{mean:.4f} (one seed)"
