"""The compute pruning saved: examples trained against examples had every trial run to the end."""
from __future__ import annotations

from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from search.record import TrialRecord, batch_size_of


@dataclass(frozen=True)
class PruningSavings:
    finished: int  # trials that trained (completed or pruned)
    pruned: int
    examples_trained: int
    examples_if_run_to_end: int

    @property
    def saved_fraction(self) -> float:
        return 1 - self.examples_trained / self.examples_if_run_to_end if self.examples_if_run_to_end else 0.0


def finished(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that trained to an end: completed or pruned."""
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def examples_trained(trial: FrozenTrial) -> int:
    return int(TrialRecord.of(trial).examples_seen or 0)


def examples_at_end(trial: FrozenTrial, budget_examples: int) -> int:
    """What the trial trains if nothing stops it: whole steps of its batch size within the budget."""
    batch_size = batch_size_of(trial) or 1
    record = TrialRecord.of(trial)
    if record.budget_seconds is not None:  # a time budget: the steps planned from the speed profile
        return int(record.steps or 0) * batch_size
    return budget_examples // batch_size * batch_size


def pruning_savings(trials: list[FrozenTrial], budget_examples: int) -> PruningSavings:
    ended = finished(trials)
    return PruningSavings(
        finished=len(ended),
        pruned=sum(t.state == TrialState.PRUNED for t in ended),
        examples_trained=sum(examples_trained(t) for t in ended),
        examples_if_run_to_end=sum(examples_at_end(t, budget_examples) for t in ended),
    )
