"""The best each batch size reached under the fixed budget, and the batch sizes near the best."""
from __future__ import annotations

from dataclasses import dataclass

from optuna.trial import FrozenTrial

from search.analysis.trials import batch_sizes, loss_bound
from search.record import Hyperparams, TrialRecord, batch_size_of, is_finite
from search.store.trials import is_completed

# Fewer completed trials than this at a batch size: its best loss is only an upper bound.
WELL_EXPLORED = 3


@dataclass(frozen=True)
class BatchSizeResult:
    """The best a batch size reached under the fixed budget, and how many trials say so."""

    batch_size: int
    sampled: int  # trials of any state that drew this batch size
    completed: int
    best: FrozenTrial | None  # lowest final validation loss among completed trials
    best_val_acc: float | None  # highest final validation accuracy among completed trials (None: no accuracy measured)

    @property
    def best_loss(self) -> float | None:
        return None if self.best is None else self.best.value

    @property
    def best_effective_lr(self) -> float | None:
        return None if self.best is None else TrialRecord.of(self.best).effective_lr

    @property
    def best_momentum(self) -> float | None:
        return None if self.best is None else Hyperparams.of(self.best).momentum


def per_batch_size(trials: list[FrozenTrial]) -> list[BatchSizeResult]:
    results = []
    for size in batch_sizes(trials):
        drawn = [t for t in trials if batch_size_of(t) == size]
        done = [t for t in drawn if is_completed(t)]
        accuracies = [a for a in (TrialRecord.of(t).final_val_acc for t in done) if is_finite(a)]
        results.append(
            BatchSizeResult(
                batch_size=size,
                sampled=len(drawn),
                completed=len(done),
                best=min(done, key=lambda t: (t.value, t.number)) if done else None,
                best_val_acc=max(accuracies) if accuracies else None,  # type: ignore[type-var]
            )
        )
    return results


def within(results: list[BatchSizeResult], tolerance: float) -> list[BatchSizeResult]:
    """The measured batch sizes whose best loss is within `tolerance` of the best of all."""
    measured = [r for r in results if r.best_loss is not None]
    if not measured:
        return []
    bound = loss_bound(min(r.best_loss for r in measured), tolerance)  # type: ignore[type-var]
    return [r for r in measured if r.best_loss <= bound]  # type: ignore[operator]
