"""What a study keeps besides its numbers, in Optuna's artifact store: the final weights of its
best completed trials, and the report's figures. optuna-dashboard lists both (`search.dashboard`).

Where: the study file's `checkpoints.dir` when it sets one (a folder every worker reaches), else
next to the SQLite storage, `<its folder>/<study>/artifacts/` (results/<study>/artifacts/ for the
default results/<study>.sqlite3). A PostgreSQL study without `checkpoints.dir` keeps no weights and
uploads no figures: its workers may run on machines that share no folder, and a folder per machine
would break the bound below.

The bound: at most `checkpoints.k` weight files per study, whatever the number of trials and
workers. A completed trial keeps its weights under one lock per study (`StudyLock`): it is ranked
among the completed trials and the trials holding weights; the weights that fell out of the k
best are removed first, then the trial's are uploaded if it is in. Pruned and failed trials never
upload, and a failed trial that held weights (its worker died between the upload and the end of
the trial) is removed at the next ranking.

A trial's weights are recorded while it runs (Optuna refuses writes to finished trials): the
artifact entry that `optuna.artifacts.upload_artifact` writes, and `checkpoint_artifact_id` and
`checkpoint_path` of `search.record.TrialRecord`. When the weights are removed later, those rows
are deleted from Optuna's attribute tables (by artifact id, nothing else), so the SQL views,
`search.best` and optuna-dashboard never point at weights that are gone.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, BinaryIO, Callable, Iterable

import optuna
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from search.config.spec import StudySpec
from search.errors import UserError
from search.record import StudyRecord, TrialRecord, is_finite
from search.store.optuna_internals import study_system_attrs
from search.store.reconnect import RETRY_WINDOW_SECONDS
from search.store.storage import TrialGate
from search.store.trials import is_completed
from search.store.urls import backend

# `optuna.artifacts.upload_artifact` records an artifact as a system attribute under this prefix.
ARTIFACT_ATTR_PREFIX = "artifacts:"
LOCK_FILE = ".lock"  # SQLite studies: the lock, in the artifact folder (never an artifact: those are UUIDs)


def artifact_folder(study_name: str, url: str, configured: str | None) -> Path | None:
    """The study's artifact folder: `configured` (checkpoints.dir), else next to an SQLite storage; None on PostgreSQL without one."""
    if configured:
        return Path(configured).expanduser().resolve()
    if backend(url) != "sqlite":
        return None
    return Path(str(make_url(url).database)).resolve().parent / study_name / "artifacts"


def study_artifact_folder(study: optuna.Study, url: str) -> Path | None:
    """The artifact folder of a study that `search.run` created (its stored spec's checkpoints.dir);
    a study kept next to it, such as `<study>:evaluation`, shares its source study's."""
    spec = StudyRecord.of(study).spec or {}
    return artifact_folder(study.study_name.partition(":")[0], url, (spec.get("checkpoints") or {}).get("dir"))


# An artifact being written: renamed to its id when complete, swept when a process died mid-write.
PARTIAL_PREFIX = ".partial-"


class AtomicArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store, each artifact written to a temporary name in the same folder and
    renamed when complete: a kill or a full disk mid-write leaves no truncated artifact (`torch.load` would fail
    on it, and the report's figures would be half drawn), only a `.partial-` file that `sweep_partial` removes."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        target = self._get_filepath(artifact_id)
        descriptor, partial = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=target.parent)
        try:
            with os.fdopen(descriptor, "wb") as out:
                shutil.copyfileobj(content_body, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise


def sweep_partial(folder: Path, older_than_seconds: float = 3600.0) -> int:
    """Remove what a process that died mid-write left (an hour old: no live writer takes that long); returns the count."""
    removed = 0
    for leftover in folder.glob(PARTIAL_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > older_than_seconds:
                leftover.unlink()
                removed += 1
    return removed


def open_store(folder: Path) -> AtomicArtifactStore:
    """The artifact store in `folder`, created if needed, swept of what dead writers left."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"Cannot create the artifact folder {folder}: {error.strerror}. Set checkpoints.dir to a writable folder.") from None
    sweep_partial(folder)
    return AtomicArtifactStore(folder)


class StudyLock:
    """One lock per study around keeping weights and uploading figures, shared by every worker.

    PostgreSQL: a session advisory lock (`TrialGate`'s, under a key of its own), held across
    machines and released by the server if the worker dies; a file lock could not be trusted on a
    network file system. SQLite: a study has one worker, but two commands may share the file, so
    an flock on `.lock` in the artifact folder (released by the kernel if the process dies).
    """

    def __init__(self, url: str, study_name: str, folder: Path, retry_seconds: float = RETRY_WINDOW_SECONDS) -> None:
        self._gate = TrialGate(url, f"{study_name} artifacts", retry_seconds) if backend(url) == "postgresql" else None
        self._path = folder / LOCK_FILE
        self._file: IO[bytes] | None = None

    def __enter__(self) -> StudyLock:
        if self._gate is not None:
            self._gate.acquire()
        else:
            self._file = open(self._path, "ab")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._gate is not None:
            self._gate.release()
        elif self._file is not None:
            self._file.close()  # releases the flock
            self._file = None


def _exists(store: FileSystemArtifactStore, artifact_id: str) -> bool:
    try:
        store.open_reader(artifact_id).close()
    except ArtifactNotFound:
        return False
    return True


def forget_artifact(engine: sqlalchemy.Engine, artifact_id: str) -> None:
    """Delete every record of a removed weights artifact: its artifact entry and the checkpoint
    attributes of the trials that point at it (a retried trial inherits its predecessor's)."""
    fields = ("checkpoint_artifact_id", "checkpoint_path")
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                'DELETE FROM trial_user_attributes WHERE "key" IN (:id_key, :path_key) AND trial_id IN '
                '(SELECT trial_id FROM trial_user_attributes WHERE "key" = :id_key AND value_json = :value)'
            ),
            {"id_key": fields[0], "path_key": fields[1], "value": json.dumps(artifact_id)},
        )
        connection.execute(
            sqlalchemy.text('DELETE FROM trial_system_attributes WHERE "key" = :key'), {"key": ARTIFACT_ATTR_PREFIX + artifact_id},
        )


class CheckpointKeeper:
    """Keeps the final weights of a study's `k` best completed trials (see the module's docstring)."""

    def __init__(self, folder: Path, k: int, lock: StudyLock, engine: sqlalchemy.Engine) -> None:
        self.folder = folder
        self.k = k
        self.store = open_store(folder)
        self.lock = lock
        self.engine = engine

    @classmethod
    def for_study(cls, spec: StudySpec, url: str, storage: optuna.storages.RDBStorage) -> CheckpointKeeper | None:
        """The study's keeper; None when it keeps nothing (`keep: none`, or PostgreSQL without `checkpoints.dir`)."""
        folder = artifact_folder(spec.name, url, spec.checkpoints.dir)
        if spec.checkpoints.keep == "none" or folder is None:
            return None
        return cls(folder, spec.checkpoints.k, StudyLock(url, spec.name, folder, spec.storage_retry_seconds), storage.engine)

    def keep(self, trial: optuna.Trial, value: float, save: Callable[[Path], None]) -> Path | None:
        """Called by a completed trial, still running: keep its weights if it is among the k best
        (`save(path)` writes them), and remove the weights that fell out. Returns the kept file."""
        with self.lock:
            others = [t for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number]
            best = self._retain(others, trial.number, value)
            if trial.number not in best:
                return None
            with tempfile.TemporaryDirectory(prefix="search-weights-") as scratch:
                file = Path(scratch) / f"trial_{trial.number}_weights.pt"  # the name the dashboard shows
                save(file)
                artifact_id = upload_artifact(artifact_store=self.store, file_path=str(file), study_or_trial=trial)
            path = self.folder / artifact_id
            TrialRecord(checkpoint_artifact_id=artifact_id, checkpoint_path=str(path)).store(trial)
            return path

    def tidy(self, study: optuna.Study) -> None:
        """Remove the weights no longer among the k best: what a failed trial (and the retry that inherited its
        attributes) left when no later trial completed to clear it. Workers call it as they start."""
        with self.lock:
            self._retain(study.get_trials(deepcopy=False), None, None)

    def _retain(self, others: list[FrozenTrial], number: int | None, value: float | None) -> set[int]:
        """Remove every kept weights file none of whose trials is among the k best; returns the best trials' numbers."""
        held = self._held(others)
        best = self._best(others, held, number, value)
        for artifact_id, holders in held.items():
            if not any(t.number in best for t in holders):
                self.remove(artifact_id)
        return best

    def remove(self, artifact_id: str) -> None:
        """Remove one trial's weights and every record of them."""
        with contextlib.suppress(ArtifactNotFound):
            self.store.remove(artifact_id)
        forget_artifact(self.engine, artifact_id)

    def _held(self, trials: Iterable[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
        """Weights in the store, by artifact id, with the trials that point at them.

        The file, not the attribute, is the truth: a worker's cached copy of a finished trial
        may still show attributes that another worker has since deleted with the weights.
        """
        held: dict[str, list[FrozenTrial]] = {}
        for trial in trials:
            artifact_id = TrialRecord.of(trial).checkpoint_artifact_id
            if artifact_id and (artifact_id in held or _exists(self.store, artifact_id)):
                held.setdefault(artifact_id, []).append(trial)
        return held

    def _best(self, others: list[FrozenTrial], held: dict[str, list[FrozenTrial]], number: int | None, value: float | None) -> set[int]:
        """The numbers of the k best among the completed trials, the running trials that hold
        weights (another worker's trial between its upload and its end) and this trial."""
        ranked: dict[int, float] = {t.number: float(t.value) for t in others if is_completed(t)}  # type: ignore[arg-type]
        for holders in held.values():
            for t in holders:
                loss = TrialRecord.of(t).final_val_loss
                if t.state == TrialState.RUNNING and is_finite(loss):
                    ranked.setdefault(t.number, float(loss))  # type: ignore[arg-type]
        if number is not None and value is not None:
            ranked[number] = value
        return set(sorted(ranked, key=lambda n: (ranked[n], n))[: self.k])


def _study_artifacts(study: optuna.Study) -> dict[str, str]:
    """filename -> artifact id of the study's own artifacts (entries that the dashboard deleted are null)."""
    attrs = study_system_attrs(study)
    found = {}
    for key, value in attrs.items():
        meta = json.loads(value) if key.startswith(ARTIFACT_ATTR_PREFIX) and isinstance(value, str) else None
        if isinstance(meta, dict) and "filename" in meta:
            found[meta["filename"]] = meta["artifact_id"]
    return found


def upload_figures(study: optuna.Study, url: str, folder: Path, figures: Iterable[Path]) -> list[str]:
    """Upload figures as study artifacts, each replacing the previous upload of the same file name
    (its content rewritten under the same artifact id, so the study lists each figure once)."""
    store = open_store(folder)
    uploaded = []
    with StudyLock(url, study.study_name, folder):
        existing = _study_artifacts(study)
        for figure in figures:
            if figure.name in existing:
                with open(figure, "rb") as content:
                    store.write(existing[figure.name], content)
            else:
                upload_artifact(artifact_store=store, file_path=str(figure), study_or_trial=study)
            uploaded.append(figure.name)
    return uploaded
