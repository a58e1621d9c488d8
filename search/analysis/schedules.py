"""Batch-size schedules: decay the learning rate or grow the batch, per starting batch size."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from search.analysis.trials import batch_sizes
from search.analysis.wording import percent_text, sizes_text
from search.record import batch_size_of, schedule_of
from search.store.trials import is_completed


@dataclass(frozen=True)
class ScheduleRow:
    """One starting batch size: per schedule, completed/sampled trials and the best final loss."""

    batch_size: int
    sampled: dict[str, int]
    completed: dict[str, int]
    best_loss: dict[str, float | None]


def schedule_comparison(trials: list[FrozenTrial]) -> list[ScheduleRow]:
    """Best loss per starting batch size and schedule; empty unless the study sampled the schedule."""
    schedules = sorted({s for t in trials if (s := schedule_of(t)) is not None})
    if len(schedules) < 2:
        return []
    rows = []
    for size in batch_sizes(trials):
        drawn = {s: [t for t in trials if batch_size_of(t) == size and schedule_of(t) == s] for s in schedules}
        done = {s: [t for t in drawn[s] if is_completed(t)] for s in schedules}
        rows.append(
            ScheduleRow(
                batch_size=size,
                sampled={s: len(drawn[s]) for s in schedules},
                completed={s: len(done[s]) for s in schedules},
                best_loss={s: min((float(t.value) for t in done[s]), default=None) for s in schedules},  # type: ignore[arg-type]
            )
        )
    return rows


def schedule_sentence(rows: list[ScheduleRow]) -> str | None:
    """Which schedule reached the lower best loss, counted over the batch sizes where both completed."""
    if not rows:
        return None
    both = [r for r in rows if all(v is not None for v in r.best_loss.values())]
    if not both:
        return "The batch-size schedules cannot be compared yet: no starting batch size has a completed trial under both."
    grow_wins = [r.batch_size for r in both if r.best_loss["grow_batch"] < r.best_loss["decay_lr"]]  # type: ignore[operator]
    change = statistics.median(r.best_loss["grow_batch"] / r.best_loss["decay_lr"] - 1 for r in both)  # type: ignore[operator]
    return (
        f"Growing the batch at a fixed learning rate (grow_batch) reached a lower best loss than decaying the learning rate "
        f"(decay_lr) at {len(grow_wins)} of the {len(both)} starting batch sizes where both completed"
        f"{' (' + sizes_text(grow_wins) + ')' if grow_wins else ''}; the median change in best loss is {percent_text(change)}. "
        f"Each cell is the best of few trials, so read small differences as noise."
    )
