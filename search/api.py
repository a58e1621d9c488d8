"""The Python API, for notebooks and scripts; the commands are thin layers over it.

    from search import Study
    study = Study.from_file("studies/smoke.yaml", overrides={"budget_examples": 2048})
    study.run(n_trials=8)
    study.best(top=3)

Everything a user can get wrong is checked before the storage is touched: the study file,
the data, the model, the budget, the database. Then the study is created (or resumed) once
and the workers (one per GPU, or the CPU) share it until the study-wide number of trials.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import torch
from optuna.trial import FrozenTrial

from search.config.load import load_spec, validate_spec
from search.config.spec import StudySpec
from search.data.source import load_data
from search.errors import EXIT_USER_ERROR, UserError
from search.record import TrialRecord
from search.render.console import Progress, print_header, summary
from search.store.storage import create_or_resume, open_storage
from search.store.trials import completed
from search.store.urls import backend, redact, resolve_url
from search.study.launch import describe_workers, spawn_workers, worker_count
from search.study.measured import check_budget_profile, device_profile, share_probes
from search.study.pruners import build_pruner
from search.study.shutdown import STOP
from search.study.space import build_sampler
from search.study.worker import run_worker
from search.train.curves import check_logger
from search.train.device import worker_device
from search.train.model import check_model


class Study:
    """A study: what it trains (its spec) and where its trials are stored (a database URL)."""

    def __init__(self, spec: StudySpec, storage: str | None = None) -> None:
        self.spec = spec
        self.url = resolve_url(storage, spec.name, spec.storage)

    @classmethod
    def from_file(cls, study: str | Path, storage: str | None = None, overrides: dict[str, Any] | None = None) -> Study:
        """A study file (a path, or a name in studies/), with study-file keys overridden by
        dotted name, e.g. {"budget_examples": 20000, "dataset.path": "cifar10.tar.gz"}."""
        return cls(load_spec(str(study), overrides), storage)

    def with_settings(self, **settings: Any) -> Study:
        """The same study with top-level settings changed (validated again), e.g. n_trials=8."""
        raw = {**self.spec.model_dump(mode="json"), **{k: v for k, v in settings.items() if v is not None}}
        return Study(validate_spec(raw, source=f"study '{self.spec.name}'"), self.url)

    def run(self, n_trials: int | None = None, workers: int | str = 1, quiet: bool = False, speed_profile: bool = True) -> int:
        """Run (or resume) the study until `n_trials` finished trials study-wide; returns the
        exit code (0, or 130/143 when interrupted: run again to resume)."""
        if n_trials is not None:
            return self.with_settings(n_trials=n_trials).run(workers=workers, quiet=quiet, speed_profile=speed_profile)
        spec, url = self.spec, self.url
        check_logger(spec.logging, spec.name)  # a logger's missing package: one paragraph, before anything is stored
        count = worker_count(str(workers))
        if backend(url) == "sqlite" and count > 1:
            raise UserError(
                f"The embedded SQLite storage supports one worker, and {count} were asked for. For several workers "
                f"use PostgreSQL: --storage postgresql+psycopg2://user@host/db (see docker-compose.yml), or --workers 1."
            )
        pruner = build_pruner(spec)
        # One worker trains in this process on its device; several get their own (this one only checks, on the CPU).
        device = worker_device()[0] if count == 1 else torch.device("cpu")
        data = load_data(spec, device)
        check_model(spec, data)
        storage = open_storage(url)
        if spec.budget_seconds is not None and count == 1:
            # Steps come from this device's profile: a budget too short for it is refused before the study exists.
            existing = optuna.load_study(study_name=spec.name, storage=storage) if spec.name in optuna.get_all_study_names(storage) else None
            profile = device_profile(storage, existing, spec, data, worker_device()[1], measure_if_missing=speed_profile)
            check_budget_profile(spec, profile, worker_device()[1], warn=False)  # the worker warns
        study = create_or_resume(storage, spec, build_sampler(spec), pruner, data_fingerprint=data.fingerprint)
        share_probes(study, spec, data.fingerprint)
        print_header(spec, url, data.describe(), describe_workers(count))
        short = spec.short_of_budget()
        if short:
            print(
                f"warning  the budget ({spec.budget_examples:,}) is not a multiple of every batch size: "
                + ", ".join(f"B={b} trains {seen:,} examples ({seen / spec.budget_examples:.1%})" for b, seen in short)
                + "; compare them knowing that, or use a budget that is a multiple of the largest batch size",
                flush=True,
            )
        if count == 1:
            STOP.install()
            code = run_worker(spec, url, data=data, speed_profile=speed_profile, progress=Progress(spec, quiet))
        else:
            storage.engine.dispose()  # no pooled connection may cross into the workers
            code = spawn_workers(spec, url, count, quiet, speed_profile)
        try:
            print(summary(study, redact(url)), flush=True)
        except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError):
            # The workers have said why (a lost database); what they finished is stored.
            print(f"the storage {redact(url)} cannot be read now, so no summary; `python -m search.best` shows the study later", file=sys.stderr)
            code = code or EXIT_USER_ERROR
        return code

    def optuna_study(self) -> optuna.Study:
        """The stored Optuna study (for Optuna's own API and plots)."""
        return optuna.load_study(study_name=self.spec.name, storage=open_storage(self.url))

    def best(self, top: int = 5) -> list[tuple[FrozenTrial, TrialRecord]]:
        """The `top` completed trials, lowest final validation loss first, with their records."""
        trials = sorted(completed(self.optuna_study()), key=lambda trial: trial.value)
        return [(trial, TrialRecord.of(trial)) for trial in trials[:top]]
