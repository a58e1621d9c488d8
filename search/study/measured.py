"""What a worker knows about its model before the first trial: the device's speed profile and
the noise-scale probes, found among the storage's measurements or measured now.

Measurements are kept apart from studies (`store.measurements`) and copied onto the study the
worker runs, so that its report finds them; the study never depends on them existing first.
"""
from __future__ import annotations

import optuna

from search.config.spec import StudySpec
from search.data.source import TrialData
from search.errors import UserError
from search.measure.profile import (
    NOISY_RATIO,
    PROFILE_ATTR_PREFIX,
    SpeedProfile,
    format_table,
)
from search.measure.speed import measure
from search.measure.time_budget import check_time_budget
from search.record import PROBE_PREFIX
from search.store import measurements
from search.store.optuna_internals import storage_of


def ensure_profile(
    study: optuna.Study, spec: StudySpec, data: TrialData, device_name: str, measure_if_missing: bool = True,
) -> SpeedProfile | None:
    """This device's profile for the study's model and data (see `device_profile`), copied onto the
    study (its report reads it there), and checked against a time budget."""
    profile = device_profile(storage_of(study), study, spec, data, device_name, measure_if_missing)
    if profile is not None and measurements.stored_profile(study, device_name) != profile:
        measurements.store_profile(study, profile)
    check_budget_profile(spec, profile, device_name)
    return profile


def device_profile(
    storage: optuna.storages.BaseStorage, study: optuna.Study | None, spec: StudySpec, data: TrialData, device_name: str,
    measure_if_missing: bool = True,
) -> SpeedProfile | None:
    """The profile on the study (if it exists), else among the storage's measurements, else
    measured now and saved there (if allowed): no study is needed, none is created."""
    profile = measurements.stored_profile(study, device_name) if study is not None else None
    of = measurements.subject(spec, data.fingerprint)
    if profile is None:
        saved = measurements.saved(storage, of, PROFILE_ATTR_PREFIX + device_name)
        if saved:
            profile = SpeedProfile.from_dict(saved[PROFILE_ATTR_PREFIX + device_name])
    if profile is None and measure_if_missing:
        print(f"speed    no profile for {device_name} yet: measuring (seconds; --skip-speed-profile skips it)", flush=True)
        profile = measure(spec, data, device_name)
        measurements.save_profile(storage, of, profile)
        print(format_table(profile), flush=True)
    return profile


def check_budget_profile(spec: StudySpec, profile: SpeedProfile | None, device_name: str, warn: bool = True) -> None:
    """With a time budget: a profile must exist, and give every batch size min_steps steps; one
    measured on a busy device is used, with a warning (`warn`)."""
    if spec.budget_seconds is not None:
        if profile is None:
            raise UserError(
                f"A time budget (budget_seconds) needs the speed profile of {device_name} to turn seconds into steps, and "
                f"there is none: leave out --skip-speed-profile, or run `python -m search.speed --study {spec.name}` first."
            )
        noisy = profile.noisy_sizes()
        if noisy and warn:
            # Re-timed already (NOISY_RETRIES); what is left is corrected by the rates trials measure.
            print(
                f"warning  the speed profile of {device_name} was measured while the device was busy (at batch sizes "
                f"{', '.join(map(str, noisy[:8]))} its timed windows differ by more than {NOISY_RATIO:g}x even after re-timing): "
                f"the first trials' steps may be off until their measured rates replace it; for exact step counts measure "
                f"again when the device is idle (python -m search.speed --study {spec.name})",
                flush=True,
            )
        check_time_budget(spec, profile)


def share_probes(study: optuna.Study, spec: StudySpec, data_fingerprint: str | None) -> None:
    """Copy the probes measured for this model and data onto the study (the report reads them there)."""
    for name, probe in measurements.saved(storage_of(study), measurements.subject(spec, data_fingerprint), PROBE_PREFIX).items():
        if name not in study.user_attrs:
            study.set_user_attr(name, probe)
