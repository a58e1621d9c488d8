"""The few places where Optuna offers no public API for what we need, in one module.

Each function names the private attribute it relies on; `tests/test_optuna_internals.py` pins that
behaviour against the installed Optuna, so an upgrade that moves it fails there, not in a study.
(One more private name is used elsewhere, by overriding rather than reading: `search.store.reconnect`
extends RDBStorage's `_get_stale_trial_ids`; `tests/test_reliability.py` exercises it.)
"""
from __future__ import annotations

import copy
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes (`Study._storage`; Optuna keeps it private)."""
    return study._storage


def frozen(trial: optuna.Trial) -> FrozenTrial:
    """A running trial as the storage has it, system attributes included (Optuna 5 exposes those only on
    frozen trials; `Trial._trial_id` is the storage's key)."""
    return trial.study._storage.get_trial(trial._trial_id)


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """A study's system attributes (Optuna 5 removed `Study.system_attrs`; the storage has them by `Study._study_id`)."""
    return study._storage.get_study_system_attrs(study._study_id)


def fixed_params(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters `enqueue_trial` fixed for a trial before it suggests them (system attribute `fixed_params`)."""
    return dict(trial.system_attrs.get("fixed_params", {}))


def with_storage(study: optuna.Study, storage: BaseStorage) -> optuna.Study:
    """The same study read through another storage (e.g. a filtering view), with its own trial cache
    (`Study._thread_local`), so that Optuna's samplers and pruners, which read `study._storage`, see the view."""
    view = copy.copy(study)
    view._storage = storage
    view._thread_local = type(study._thread_local)()
    return view
