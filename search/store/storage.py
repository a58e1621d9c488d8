"""Study storage: an embedded SQLite file by default, PostgreSQL for many workers and machines.

The URL comes from `--storage`, else the `SEARCH_STORAGE` environment variable (keeps
credentials out of shell history), else the study file, else `results/<study>.sqlite3`.
Passwords can also stay out of the URL entirely: psycopg2 reads PGPASSWORD and ~/.pgpass.
Passwords are never printed: every URL shown goes through `redact`.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import optuna
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url

from search.config.load import validate_spec
from search.config.spec import StudySpec, without_plan_only
from search.errors import UserError
from search.record import StudyRecord
from search.store.reconnect import (
    RETRY_WINDOW_SECONDS,
    Reconnecting,
    ReconnectingRDBStorage,
    call_retrying,
    retrying,
)
from search.store.urls import backend, redact, scrub
from search.store.views import ensure_views

# Heartbeats and their retry callback have been "experimental" since Optuna 2.8; we rely on them.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

# Optuna's RDBStorage needs two pooled connections per process (one is not enough); keeping
# it at two bounds the connections at 2 x workers, e.g. 64 for 32 workers under the default 100.
POOL_SIZE = 2
CONNECT_TIMEOUT_SECONDS = 10
# A worker is declared lost after this many missed heartbeats; its trial is retried this often.
HEARTBEAT_GRACE_FACTOR = 3
MAX_RETRIES = 3
# Waiting workers poll the trial gate with backoff: each poll is a new server process, and 32
# workers polling every 0.1 s spent more CPU on those than the gate holder got (bench/storage).
_GATE_FIRST_POLL_SECONDS = 0.05
_GATE_LAST_POLL_SECONDS = 1.0








def _engine_kwargs(url: str) -> dict[str, Any]:
    if backend(url) == "sqlite":
        return {"connect_args": {"timeout": 60}}
    # Optuna sets pool_pre_ping only for MySQL; PostgreSQL needs it to survive server restarts.
    return {
        "pool_size": POOL_SIZE,
        "max_overflow": 0,
        "pool_pre_ping": True,
        "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "batch-size-search"},
    }


def _explain(error: Exception, url: str) -> str:
    """The driver's message, its first two lines, scrubbed of anything from the URL's password."""
    original = getattr(error, "orig", None) or error
    return scrub(" ".join(str(original).split("\n")[0:2]).strip(), url)


def _check_sqlite_file(path: Path, url: str) -> None:
    """An SQLite file we may use: ours or new, writable. A foreign database (tables, none of
    Optuna's) is refused rather than filled with Optuna's tables and our views."""
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"Cannot create the SQLite storage {redact(url)}: {error.strerror}. Choose a writable folder.") from None
        if not os.access(path.parent, os.W_OK):
            raise UserError(f"Cannot create the SQLite storage {redact(url)}: the folder {path.parent} is not writable. Choose another.")
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise UserError(f"The SQLite storage {redact(url)} is not writable (or readable) by this user. Fix its permissions or use another file.")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        raise UserError(f"{path} is not an SQLite database. Point --storage at a study database or a new file.") from None
    if tables and "version_info" not in tables:
        raise UserError(
            f"{path} is an SQLite database of something else (tables {', '.join(sorted(tables)[:5])}), not a study storage: "
            "it is left untouched. Point --storage at a new file or an existing study database."
        )


_SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha1(b"batch-size-search optuna schema").digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """One process at a time through Optuna's first connection on PostgreSQL.

    Optuna creates its tables, and PostgreSQL enum types with them, when it first connects; two
    workers doing that at once on an empty database collide ("duplicate key ... pg_type_typname_nsp_index",
    seen with two Slurm array tasks starting together). A session advisory lock serializes them.
    """
    if backend(url) != "postgresql":
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=_engine_kwargs(url)["connect_args"])
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


def open_storage(
    url: str, heartbeat_seconds: int | None = None, retry_seconds: float = RETRY_WINDOW_SECONDS, *, wait: bool = False
) -> optuna.storages.RDBStorage:
    """Connect (creating Optuna's tables if needed); an unreachable database is a UserError.

    With `wait`, a broken connection is retried for `retry_seconds` first: a worker opens the
    storage after the study was created in it, so a failure then is a restart, not a typo.

    With a heartbeat, a trial whose worker died (SIGKILL, lost machine) is failed after the
    grace period by the next worker that starts a trial, and its parameters are queued again.
    """
    if backend(url) == "sqlite":
        _check_sqlite_file(Path(make_url(url).database), url)
    try:
        def connect() -> ReconnectingRDBStorage:
            with _schema_lock(url):
                return ReconnectingRDBStorage(
                    url,
                    engine_kwargs=_engine_kwargs(url),
                    heartbeat_interval=heartbeat_seconds,
                    grace_period=HEARTBEAT_GRACE_FACTOR * heartbeat_seconds if heartbeat_seconds else None,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES) if heartbeat_seconds else None,
                )
        if wait:
            patience = Reconnecting()
            patience.retry_window = retry_seconds
            storage = call_retrying(connect, patience)
        else:
            storage = connect()
    except (sqlalchemy.exc.SQLAlchemyError, ModuleNotFoundError, ImportError) as error:
        raise UserError(
            f"Cannot open the study storage {redact(url)}: {_explain(error, url)}. Check that the database server "
            f"is running and reachable, the database exists and the user and password are right "
            f"(PGPASSWORD or ~/.pgpass), or leave --storage out to use the local SQLite file."
        ) from None
    storage.retry_window = retry_seconds
    return storage


def create_or_resume(
    storage: optuna.storages.BaseStorage, spec: StudySpec, sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
    *, data_fingerprint: str | None,
) -> optuna.Study:
    """Create the study once (before any worker starts), or resume it if the spec and the data
    (its fingerprint, not its path: a moved copy resumes, different data never does) still match."""
    try:
        ensure_views(storage)
        study = optuna.create_study(
            storage=storage, study_name=spec.name, direction="minimize", load_if_exists=True, sampler=sampler, pruner=pruner
        )
    except sqlalchemy.exc.OperationalError as error:
        raise UserError(f"Cannot write to the study storage: {_explain(error, str(getattr(storage, 'url', '')))}. Check that it is writable (not read-only) and run again.") from None
    stored = StudyRecord.of(study).comparability
    key = {**spec.comparability_key(), "data_fingerprint": data_fingerprint}
    if stored is None:
        StudyRecord(
            comparability=key, spec=spec.model_dump(mode="json", exclude={"storage"}), lr_parameterization=spec.lr_parameterization.describe(),
            budget_examples=spec.budget_examples, report_every_examples=spec.report_every(),
        ).store(study)
        study.set_metric_names(["final_val_loss"])
    elif (stored := _comparable(stored)) != key:
        changed = sorted(k for k in key if stored.get(k) != key[k])
        raise UserError(
            f"Study '{spec.name}' already exists in this storage with different settings ({', '.join(changed)}), "
            f"so its trials would not be comparable with new ones. Run with --study-name NEW_NAME (or another "
            f"--storage) to start a new study, or restore the original settings to resume it."
        )
    return study


def _comparable(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored comparability key as today's `comparability_key` writes it (keys from before `FRONTIER_PLAN_ONLY` hold some of it)."""
    frontier = stored.get("frontier")
    return {**stored, "frontier": without_plan_only(frontier)} if isinstance(frontier, dict) else stored


class TrialGate(Reconnecting):
    """Makes "count the study's trials, then start one" atomic across workers.

    With it, `n_trials` is an exact study-wide total even when many workers on many machines
    finish at once. On PostgreSQL it is a session advisory lock (released by the server if
    the worker dies); SQLite studies have a single worker, so there is nothing to serialize.
    """

    def __init__(self, url: str, study_name: str, retry_seconds: float = RETRY_WINDOW_SECONDS) -> None:
        self.retry_window = retry_seconds
        self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool) if backend(url) == "postgresql" else None
        self._key = int.from_bytes(hashlib.sha1(study_name.encode()).digest()[:8], "big", signed=True)
        self._connection: sqlalchemy.Connection | None = None

    @retrying
    def acquire(self) -> None:
        if self._engine is None:
            return
        # Polling a try-lock, instead of queueing on pg_advisory_lock, keeps at most one
        # connection per waiting worker open for a moment, not for the whole wait.
        delay = _GATE_FIRST_POLL_SECONDS
        while True:
            connection = self._engine.connect()
            try:
                locked = connection.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}).scalar()
            except BaseException:
                connection.close()  # a broken connection is retried, not leaked
                raise
            if locked:
                self._connection = connection
                return
            connection.close()
            time.sleep(random.uniform(delay / 2, delay))
            delay = min(2 * delay, _GATE_LAST_POLL_SECONDS)

    def release(self) -> None:
        if self._connection is not None:
            try:
                self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            except sqlalchemy.exc.SQLAlchemyError:
                pass  # the connection broke, and the server released the lock with its session
            finally:
                self._connection.close()
                self._connection = None


def stored_spec(study: optuna.Study, data: str | None) -> StudySpec:
    """The spec the study was run with (the data location replaced by `data` when given)."""
    raw = StudyRecord.of(study).spec
    if raw is None:
        raise UserError(
            f"Study '{study.study_name}' has no stored study spec, so it was not created by `python -m search.run` "
            f"and there is no model, data or budget to retrain with."
        )
    if data:
        if raw.get("dataset") is None:
            raise UserError(f"Study '{study.study_name}' trains on its own data (data: class_path): --data does not apply to it.")
        raw = {**raw, "dataset": {**raw["dataset"], "path": data}}
    return validate_spec(raw, source=f"the spec stored with study '{study.study_name}'")
