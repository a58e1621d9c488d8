"""An RDBStorage that rides out database restarts and marks lost workers' trials.

Every storage call that fails because the connection broke is retried with exponential
backoff for up to `retry_window` seconds (`pool_pre_ping` then hands out a fresh
connection). Past that window the worker stops with a clear message instead of failing
trials one by one. A trial whose worker died (no heartbeat for the grace period) gets the
reason `worker lost` stamped before Optuna fails it and re-queues its parameters.
"""
from __future__ import annotations

import functools
import sys
import time
from typing import Any, Callable, TypeVar

import optuna
import sqlalchemy
from optuna.exceptions import StorageInternalError

from search.errors import UserError

T = TypeVar("T")
RETRY_WINDOW_SECONDS = 120.0
_MAX_BACKOFF_SECONDS = 8.0


def _is_connection_error(error: BaseException) -> bool:
    cause = error.__cause__ if isinstance(error, StorageInternalError) else error
    return isinstance(cause, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or bool(
        getattr(cause, "connection_invalidated", False)
    )


def _disk_full(error: BaseException) -> bool:
    """SQLite's "database or disk is full", PostgreSQL's "No space left on device" / "could not extend file"."""
    text = str(error.__cause__ or error).lower()
    return "disk is full" in text or "no space left" in text or "could not extend file" in text


class Reconnecting:
    """What `retrying` needs of the object whose methods it wraps."""

    retry_window: float = RETRY_WINDOW_SECONDS
    lost: UserError | None = None


def call_retrying(call: Callable[[], T], holder: Reconnecting) -> T:
    """Call `call`, retrying while the database connection is broken, up to `holder.retry_window` seconds."""
    deadline = time.monotonic() + holder.retry_window
    delay = 0.25
    while True:
        if holder.lost:
            raise holder.lost
        try:
            return call()
        except (StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as error:
            if not _is_connection_error(error):
                raise
            if _disk_full(error):  # no retry mends a full disk: say so at once
                holder.lost = UserError(
                    "The study database's disk is full (the database reports it cannot write). Finished trials are safe in it; "
                    "free some space on that disk (or move the storage to a larger one) and run the same command again to resume."
                )
                raise holder.lost from None
            if time.monotonic() + delay > deadline:
                holder.lost = UserError(
                    f"Lost the connection to the study database for more than {holder.retry_window:.0f} s "
                    f"({str(error.__cause__ or error).splitlines()[0]}). Finished trials are safe in the database; "
                    f"the running trial is failed and re-queued by the next worker's heartbeat check. Run the "
                    f"same command again once the database is reachable."
                )
                raise holder.lost from None
            print(f"storage: connection lost ({type(error.__cause__ or error).__name__}); retrying in {delay:.2f} s", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(2 * delay, _MAX_BACKOFF_SECONDS)


def retrying(method: Callable[..., T]) -> Callable[..., T]:
    """Retry `method` while the database connection is broken, up to `self.retry_window` seconds."""

    @functools.wraps(method)
    def wrapper(self: Reconnecting, *args: Any, **kwargs: Any) -> T:
        return call_retrying(lambda: method(self, *args, **kwargs), self)

    return wrapper


class ReconnectingRDBStorage(optuna.storages.RDBStorage, Reconnecting):
    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        for trial_id in stale:
            # Still RUNNING, so still writable: record why it is about to fail.
            try:
                self.set_trial_user_attr(trial_id, "reason", "worker lost (no heartbeat)")
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker got there first
        return stale

    _record_heartbeat_retrying = retrying(optuna.storages.RDBStorage.record_heartbeat)

    def record_heartbeat(self, trial_id: int) -> None:
        # Runs in Optuna's heartbeat thread: an error there must not print a traceback;
        # the main thread reports a lost database.
        try:
            self._record_heartbeat_retrying(trial_id)
        except UserError:
            pass


_RETRIED = [
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
    "get_study_system_attrs", "set_study_user_attr", "set_study_system_attr", "get_all_studies",
    "create_new_trial", "set_trial_param", "get_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
    "get_best_trial", "_get_stale_trial_ids",
]
for _name in _RETRIED:
    setattr(ReconnectingRDBStorage, _name, retrying(getattr(ReconnectingRDBStorage, _name)))
