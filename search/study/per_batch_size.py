"""A study seen through one batch size: the frontier's pruner compares a trial only with trials of
its own batch size; its sampler sees every batch size's trials aligned to the trial's (`aligned`,
the default `frontier.share_tuning`) or, without sharing, only its own.

Across batch sizes, early checkpoints favour small batches (more steps at equal examples seen)
and the good learning rate moves with the batch size: a sampler or pruner that pooled them as they
are would bias the frontier, so the sampler's view moves each learning rate along the fitted slope
and ranks each loss within its own batch size. Optuna's samplers and pruners read trials through
`study._get_trials` and the study's storage (Hyperband builds its bracket studies on that storage),
so the view works at the storage: every reader sees the same trials.
"""
from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Container, Sequence
from typing import Any, Callable

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search.record import BATCH_SIZE, LR, SEARCH, TrialRecord, batch_size_of, is_finite, ranked
from search.store.optuna_internals import fixed_params, storage_of, with_storage


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: _ViewStorage, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    method.__name__ = name
    return method


class _ViewStorageBase(BaseStorage):
    def __init__(self, storage: BaseStorage, view: Callable[[list[FrozenTrial]], list[FrozenTrial]]) -> None:
        self._inner = storage
        self._view = view

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._view(self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states))


# Every other storage method is the real storage's.
_ViewStorage = type(
    "_ViewStorage",
    (_ViewStorageBase,),
    {name: _delegate(name) for name in BaseStorage.__abstractmethods__ if name != "get_all_trials"},
)


def trial_batch_size(trial: FrozenTrial) -> int | None:
    """The trial's batch size: suggested, or fixed by the frontier's queue before it is suggested."""
    value = batch_size_of(trial)
    return value if value is not None else fixed_params(trial).get(BATCH_SIZE)


def one_batch_size(study: optuna.Study, batch_size: int | None) -> optuna.Study:
    """The study with only the whole-budget trials of `batch_size` (the study itself for None): the efficiency
    curve's shorter runs, annealed early, would read as good configurations and low losses at early rungs."""
    if batch_size is None:
        return study
    return with_storage(study, _ViewStorage(storage_of(study), lambda trials: [t for t in ranked(trials) if batch_size_of(t) == batch_size]))


def lr_slope(trials: list[FrozenTrial]) -> float:
    """How the best sampled learning rate moves with the batch size so far: the least-squares slope of
    log lr against log B through each batch size's best completed trial, clipped to [-1, 1]; 0 (the
    study's own lr parameterization taken as right) until three batch sizes have completed one."""
    best: dict[int, FrozenTrial] = {}
    for t in trials:
        size = batch_size_of(t)
        if size is not None and t.state == TrialState.COMPLETE and is_finite(t.value) and LR in t.params:
            if size not in best or t.value < best[size].value:  # type: ignore[operator]
                best[size] = t
    if len(best) < 3:
        return 0.0
    x = np.log([float(b) for b in best])
    y = np.log([float(t.params[LR]) for t in best.values()])
    return float(np.clip(np.polyfit(x, y, 1)[0], -1.0, 1.0))


def aligned(trials: list[FrozenTrial], batch_size: int) -> list[FrozenTrial]:
    """Every trial as evidence for `batch_size`: another batch size's learning rate moved along the
    fitted slope (`lr_slope`, clipped to its range) and its batch size read as `batch_size`; each
    completed trial's value replaced by its rank within its own batch size (0 best, 1 worst), so that
    "good" means good for its batch size and a batch size with lower losses does not fill the model's
    good set. Trials of `batch_size` itself keep their parameters."""
    slope = lr_slope(trials)
    ranks: dict[int, list[float]] = {}
    for t in trials:
        if t.state == TrialState.COMPLETE and is_finite(t.value) and (size := batch_size_of(t)) is not None:
            ranks.setdefault(size, []).append(t.value)  # type: ignore[arg-type]
    for values in ranks.values():
        values.sort()
    view = []
    for t in trials:
        size = batch_size_of(t)
        if size is None:
            view.append(t)
            continue
        t = copy.copy(t)
        params = dict(t.params)
        if size != batch_size and LR in params:
            lr = t.distributions[LR]
            low, high = getattr(lr, "low", -math.inf), getattr(lr, "high", math.inf)
            params[LR] = float(min(high, max(low, params[LR] * (batch_size / size) ** slope)))
            params[BATCH_SIZE] = batch_size
        t.params = params
        if t.state == TrialState.COMPLETE and is_finite(t.value):
            values = ranks[size]
            t.value = bisect.bisect_left(values, t.value) / max(1, len(values) - 1)
        view.append(t)
    return view


def shared_view(study: optuna.Study, batch_size: int | None) -> optuna.Study:
    """The study as evidence for `batch_size` (`aligned`): every batch size's whole-budget trials, aligned to it."""
    if batch_size is None:
        return study
    return with_storage(study, _ViewStorage(storage_of(study), lambda trials: aligned(ranked(trials), batch_size)))


class PerBatchSizeSampler(optuna.samplers.BaseSampler):
    """`base` modelling the trial's batch size: by default from its trials only; with `shared`
    (`frontier.share_tuning`) from every batch size's trials, aligned to it (`aligned`)."""

    def __init__(self, base: optuna.samplers.BaseSampler, shared: bool = False) -> None:
        self.base = base
        self._view = shared_view if shared else one_batch_size

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(self._view(study, trial_batch_size(trial)), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.base.sample_relative(self._view(study, trial_batch_size(trial)), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(self._view(study, trial_batch_size(trial)), trial, param_name, param_distribution)

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
