"""Reading a study back: find it where `search.run` put it, and flatten each trial into a row.

`search.best`, `search.report`, `search.evaluate` and `search.dashboard` all start here, so
they resolve `--study` and `--storage` exactly as `search.run` does and fail the same way.
`TrialRow` is the Python twin of the `search_trials` SQL view (`search.store.views`): the same
columns (the sampled parameters, then the fields of `search.record.TrialRecord`) under the same
names, so the CSV/JSON of `search.best` and a `psql` query agree.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from search.config.load import find_study_file, load_spec
from search.config.spec import MAX_STUDY_NAME, STUDY_NAME
from search.errors import UserError
from search.record import (
    SEED,
    SHARE_OF_BUDGET,
    TrialRecord,
    batch_size_of,
    is_finite,
    ranked,
)
from search.store.storage import open_storage
from search.store.urls import STORAGE_ENV, backend, redact, resolve_url

EVALUATION_SUFFIX = ":evaluation"


def locate(study: str, cli_storage: str | None) -> tuple[str, str]:
    """The study's name in the storage and the storage URL, resolved as `search.run` resolves them.

    `study` is a study file (a name in studies/ or a path: its name and `storage` apply) or
    the name of a study in the storage (e.g. one run with --study-name). A suffix such as
    `:evaluation` names a study kept next to its source study, in the source study's storage.
    """
    base, colon, suffix = study.partition(":")
    try:
        path = find_study_file(base)
    except UserError:
        if base.endswith((".yaml", ".yml")):
            raise  # meant as a file, and there is none
        path = None
    if path is None:
        if len(base) > MAX_STUDY_NAME or not re.fullmatch(STUDY_NAME, base):
            raise UserError(
                f"'{base[:60]}{'...' if len(base) > 60 else ''}' is neither a study file nor a study name (letters, digits, "
                f"_ . - and at most {MAX_STUDY_NAME} characters). Pass the study file or the name search.run printed."
            )
        return study, resolve_url(cli_storage, base)
    spec = load_spec(str(path))
    return spec.name + colon + suffix, resolve_url(cli_storage, spec.name, spec.storage)


def connect(url: str) -> optuna.storages.RDBStorage:
    """Open an existing study database; a missing SQLite file is a `UserError`, never a new empty one."""
    if backend(url) == "sqlite":
        database = make_url(url).database
        if database and database != ":memory:" and not Path(database).is_file():
            raise UserError(
                f"There is no study database at {database}. Run `python -m search.run --study NAME` first, "
                f"or pass the storage the study was run with (--storage URL or ${STORAGE_ENV})."
            )
    return open_storage(url)


def load(storage: optuna.storages.BaseStorage, name: str, url: str) -> optuna.Study:
    """Load an existing study; an unknown name is a `UserError` that lists the studies there."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = optuna.get_all_study_names(storage)
        raise UserError(
            f"Study '{name}' is not in {redact(url)}; the studies there are: {', '.join(known) or '(none)'}. "
            f"Check --study, or pass the storage the study was run with (--storage URL or ${STORAGE_ENV})."
        ) from None


def find(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    """A study that may not exist yet, such as `<study>:evaluation`."""
    return optuna.load_study(study_name=name, storage=storage) if name in optuna.get_all_study_names(storage) else None


def open_study(name: str, url: str) -> optuna.Study:
    return load(connect(url), name, url)


def is_completed(trial: FrozenTrial) -> bool:
    """Completed with a finite final validation loss: the trials that rank and that the analysis counts."""
    return trial.state == TrialState.COMPLETE and trial.value is not None and math.isfinite(trial.value)


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that trained the whole budget, best (lowest final validation loss) first; none completed is a `UserError`."""
    trials = ranked(without_superseded(study.get_trials(deepcopy=False)))
    done = best_first(trials)
    if not done:
        raise UserError(
            f"Study '{study.study_name}' has {len(trials)} trials ({state_counts(trials) or 'none'}) but none has "
            f"completed yet, so there is nothing to rank. Let `python -m search.run` finish more trials and run again."
        )
    return done


def without_superseded(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """All trials but superseded re-runs. With `frontier.until_converged`, search trials added to an
    under-tuned batch size can find it a new best, whose seed (and efficiency) re-runs replace the
    earlier best's (and so do its efficiency curve's runs): the current re-runs of a role and batch size are those of the latest search trial
    that has completed re-runs (a new best is always a later trial: the highest `frontier_of`). The SQL
    view `search_frontier` applies the same rule."""
    reruns = []  # (trial, its role and batch size, the search trial it re-runs)
    for trial in trials:
        record = TrialRecord.of(trial)
        if record.frontier_role in (SEED, *SHARE_OF_BUDGET) and record.frontier_of is not None:
            reruns.append((trial, (record.frontier_role, batch_size_of(trial)), record.frontier_of))
    latest: dict[tuple[str, int | None], int] = {}
    for trial, key, of in reruns:
        if trial.state == TrialState.COMPLETE:
            latest[key] = max(latest.get(key, -1), of)
    superseded = {trial.number for trial, key, of in reruns if of < latest.get(key, -1)}
    return [t for t in trials if t.number not in superseded]


def draw_loss(trial: FrozenTrial) -> float | None:
    """A finished search draw's loss: its final value, or for a pruned one the last loss it reported
    (higher than it would have reached, so a tuning curve errs towards "not yet tuned")."""
    if trial.state == TrialState.COMPLETE:
        return trial.value if is_finite(trial.value) else None
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        last = trial.intermediate_values[max(trial.intermediate_values)]
        return last if is_finite(last) else None
    return None


def best_first(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The completed trials among `trials`, lowest final validation loss first (ties by number)."""
    return sorted((t for t in trials if is_completed(t)), key=lambda t: (t.value, t.number))


def state_counts(trials: list[FrozenTrial]) -> str:
    """E.g. "3 complete, 5 pruned": states present, in Optuna's order."""
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    return ", ".join(f"{n} {state.name.lower()}" for state, n in counts.items() if n)


@dataclass(frozen=True)
class TrialRow:
    """One trial: its number, state, sampled parameters and stored record (NaN and infinities as None)."""

    number: int
    state: str
    batch_size: int | None
    lr: float | None
    momentum: float | None
    record: TrialRecord

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRow:
        params = trial.params
        return cls(
            number=trial.number, state=trial.state.name, batch_size=params.get("batch_size"), lr=params.get("lr"),
            momentum=params.get("momentum"), record=TrialRecord.of(trial).finite(),
        )

    @classmethod
    def columns(cls) -> list[str]:
        """The keys of `as_dict`, in order: the columns of the `search_trials` view, by the same names."""
        return [f.name for f in fields(cls) if f.name != "record"] + list(TrialRecord.names())

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self.record if name in TrialRecord.names() else self, name) for name in self.columns()}
