"""A study seen through one batch size: the frontier's sampler and pruner compare a trial only
with trials of its own batch size.

Across batch sizes, early checkpoints favour small batches (more steps at equal examples seen)
and the good learning rate moves with the batch size: a sampler or pruner that pooled them would
bias the frontier. Optuna's samplers and pruners read trials through `study._get_trials` and the
study's storage (Hyperband builds its bracket studies on that storage), so the view filters at
the storage: every reader sees the same subset.
"""
from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any, Callable

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search.record import BATCH_SIZE, SEARCH, TrialRecord, batch_size_of
from search.store.optuna_internals import fixed_params, storage_of, with_storage


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: _OneBatchSizeStorage, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    method.__name__ = name
    return method


class _OneBatchSizeStorageBase(BaseStorage):
    def __init__(self, storage: BaseStorage, batch_size: int) -> None:
        self._inner = storage
        self._batch_size = batch_size

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return [t for t in trials if batch_size_of(t) == self._batch_size]


# Every other storage method is the real storage's.
_OneBatchSizeStorage = type(
    "_OneBatchSizeStorage",
    (_OneBatchSizeStorageBase,),
    {name: _delegate(name) for name in BaseStorage.__abstractmethods__ if name != "get_all_trials"},
)


def trial_batch_size(trial: FrozenTrial) -> int | None:
    """The trial's batch size: suggested, or fixed by the frontier's queue before it is suggested."""
    value = batch_size_of(trial)
    return value if value is not None else fixed_params(trial).get(BATCH_SIZE)


def one_batch_size(study: optuna.Study, batch_size: int | None) -> optuna.Study:
    """The study with only the trials of `batch_size` (the study itself for None)."""
    if batch_size is None:
        return study
    return with_storage(study, _OneBatchSizeStorage(storage_of(study), batch_size))


class PerBatchSizeSampler(optuna.samplers.BaseSampler):
    """`base` modelling each batch size separately: it sees only the trials of the trial's batch size."""

    def __init__(self, base: optuna.samplers.BaseSampler) -> None:
        self.base = base

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(one_batch_size(study, trial_batch_size(trial)), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.base.sample_relative(one_batch_size(study, trial_batch_size(trial)), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(one_batch_size(study, trial_batch_size(trial)), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


class WithinBatchSizePruner(optuna.pruners.BasePruner):
    """`base` comparing a trial only with trials of its own batch size, at equal examples seen."""

    def __init__(self, base: optuna.pruners.BasePruner) -> None:
        self.base = base

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if TrialRecord.of(trial).frontier_role not in (None, SEARCH):
            return False  # a seed or efficiency re-run measures its configuration to the end
        return self.base.prune(one_batch_size(study, trial_batch_size(trial)), trial)
