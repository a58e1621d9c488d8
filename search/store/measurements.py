"""Measurements of a model on its data (speed profiles, noise-scale probes), kept in the storage
beside the studies but apart from them, and copied onto the studies they serve.

Measuring never creates a study nor pins its settings (`search.speed` or `search.probe` before
the first `search.run` leaves the user free to choose the budget), and one measurement serves
every study of the same model, loss, optimizer and data, whatever its name or budget. They live
in the user attributes of one Optuna study per storage, named `search:measurements`, keyed by
what was measured (`subject`) and the measurement's name.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import optuna

from search.config.spec import StudySpec
from search.measure.profile import PROFILE_ATTR_PREFIX, SpeedProfile
from search.record import PROBE_PREFIX, ProbeResult

MEASUREMENTS_STUDY = "search:measurements"


def subject(spec: StudySpec, data_fingerprint: str | None) -> str:
    """What a measurement is of: the model, its loss and optimizer kind, and the data itself."""
    what = {
        **spec.model_dump(include={"model", "loss", "data"}, mode="json"),
        "dataset": None if spec.dataset is None else spec.dataset.model_dump(mode="json", exclude={"path"}),
        "optimizer": spec.optimizer.name,
        "data_fingerprint": data_fingerprint,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _study(storage: optuna.storages.BaseStorage) -> optuna.Study:
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created": it is not a study to the user
    try:
        return optuna.create_study(storage=storage, study_name=MEASUREMENTS_STUDY, load_if_exists=True)
    finally:
        optuna.logging.set_verbosity(verbosity)


def save(storage: optuna.storages.BaseStorage, of: str, name: str, value: Any) -> None:
    _study(storage).set_user_attr(f"{of}/{name}", value)


def saved(storage: optuna.storages.BaseStorage, of: str, prefix: str) -> dict[str, Any]:
    """The measurements of `of` whose names start with `prefix`, by name."""
    if MEASUREMENTS_STUDY not in optuna.get_all_study_names(storage):
        return {}
    head = f"{of}/{prefix}"
    return {key.split("/", 1)[1]: value for key, value in _study(storage).user_attrs.items() if key.startswith(head)}


def save_profile(storage: optuna.storages.BaseStorage, of: str, profile: SpeedProfile) -> None:
    """Keep a device's speed profile for the model and data `of` names (`subject`)."""
    save(storage, of, PROFILE_ATTR_PREFIX + profile.device, profile.as_dict())


def save_probe(storage: optuna.storages.BaseStorage, spec: StudySpec, data_fingerprint: str | None, result: ProbeResult) -> str:
    """Keep a probe for its model and data, and on the study when it exists; returns the key it is stored under."""
    key = f"{PROBE_PREFIX}{result.created}"
    save(storage, subject(spec, data_fingerprint), key, result.as_dict())
    if spec.name in optuna.get_all_study_names(storage):
        optuna.load_study(study_name=spec.name, storage=storage).set_user_attr(key, result.as_dict())
    return key


def stored_profile(study: optuna.Study, device_name: str) -> SpeedProfile | None:
    """The speed profile of `device_name` stored on the study, if any."""
    raw = study.user_attrs.get(PROFILE_ATTR_PREFIX + device_name)
    return SpeedProfile.from_dict(raw) if raw else None


def profiles_in(study_attrs: Mapping[str, Any]) -> list[SpeedProfile]:
    """Every device's speed profile stored on a study (its user attributes), one per device."""
    return [SpeedProfile.from_dict(v) for k, v in sorted(study_attrs.items()) if k.startswith(PROFILE_ATTR_PREFIX)]


def store_profile(study: optuna.Study, profile: SpeedProfile) -> None:
    """Copy a device's profile onto the study (its trials and report read it there)."""
    study.set_user_attr(PROFILE_ATTR_PREFIX + profile.device, profile.as_dict())
