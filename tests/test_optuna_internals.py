"""Pins the Optuna behaviour `search.store.optuna_internals` relies on: an Optuna upgrade that moves it fails here."""
from __future__ import annotations

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from search.store.optuna_internals import (
    fixed_params,
    frozen,
    storage_of,
    study_system_attrs,
    with_storage,
)


def test_frozen_trial_and_enqueued_parameters() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"batch_size": 32})
    trial = study.ask()
    snapshot = frozen(trial)
    assert snapshot.number == trial.number and fixed_params(snapshot) == {"batch_size": 32}
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(snapshot) is None
    assert storage_of(study) is study._storage
    storage_of(study).set_study_system_attr(study._study_id, "mark", 1)
    assert study_system_attrs(study)["mark"] == 1


def test_a_study_through_another_storage_sees_what_it_filters() -> None:
    study = optuna.create_study()
    for x in range(4):
        study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions={"x": optuna.distributions.IntDistribution(0, 9)}, value=x))

    class EvenOnly(optuna.storages.InMemoryStorage):
        def __init__(self, inner: optuna.storages.BaseStorage) -> None:
            self.inner = inner

        def __getattribute__(self, name: str):  # type: ignore[no-untyped-def]
            if name in ("inner", "get_all_trials", "__class__", "__dict__"):
                return object.__getattribute__(self, name)
            return getattr(object.__getattribute__(self, "inner"), name)

        def get_all_trials(self, study_id, deepcopy=True, states=None):  # type: ignore[no-untyped-def]
            return [t for t in self.inner.get_all_trials(study_id, deepcopy, states) if t.params["x"] % 2 == 0]

    view = with_storage(study, EvenOnly(storage_of(study)))
    # Optuna's samplers and pruners read trials through the study: the view's trials are the filtered ones.
    assert [t.params["x"] for t in view.get_trials(deepcopy=False)] == [0, 2]
    assert [t.params["x"] for t in view._get_trials(deepcopy=False, use_cache=True)] == [0, 2]
    assert len(study.get_trials(deepcopy=False)) == 4  # the study itself is untouched
