"""A worker: one process on one device, running trials of a shared study.

Workers open their own storage connection (a connection must not cross fork()), load the
data from the cache onto their device once, and run trials until the study-wide total.
"""
from __future__ import annotations

import functools
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Literal, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.config.spec import StudySpec
from search.data.source import TrialData, load_data
from search.errors import TrialFailed
from search.record import TrialRecord
from search.store.artifacts import CheckpointKeeper
from search.store.storage import TrialGate, open_storage
from search.study.frontier import queue_next
from search.study.measured import ensure_profile
from search.study.objective import Objective
from search.study.pruners import build_pruner
from search.study.reporting import ProgressListener
from search.study.shutdown import STOP
from search.study.space import build_sampler, sampler_seed
from search.train.device import worker_device

SPEC_ENV = "SEARCH_WORKER_SPEC"
TrialListener = Callable[[optuna.Study, FrozenTrial], None]


class WorkerProgress(ProgressListener, Protocol):
    """A trial's progress, and a line (or more) once it has finished."""

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None: ...


class Gate(Protocol):
    """What serializes "count, then start a trial" across workers (storage.TrialGate)."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...
# Our own line per trial (with the reason of a failure) replaces Optuna's log of trials.
optuna.logging.set_verbosity(optuna.logging.ERROR)
MAX_FAILURES_IN_A_ROW = 5


def take_turn(
    study: optuna.Study, gate: Gate, objective: Callable[[optuna.Trial], float], n_trials: int | None, callbacks: list[TrialListener],
    queue: Callable[[optuna.Study], Literal["queued", "waiting", "done"]] | None = None,
) -> Literal["finished", "claimed", "ran"]:
    """One turn of a worker, under the gate (so that `n_trials` is exact across workers):
    fail (and re-queue) the trials of workers that died, count, and run one trial unless the
    study-wide total is reached ("finished") or every remaining slot is running ("claimed").
    `queue` (a frontier study's) chooses the next trial; "waiting" counts as claimed, "done" as
    finished. The objective releases the gate as its trial starts."""
    gate.acquire()
    try:
        optuna.storages.fail_stale_trials(study)
        states = Counter(t.state for t in study.get_trials(deepcopy=False))
        done = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
        if n_trials is not None and done >= n_trials:
            return "finished"
        if n_trials is not None and done + states[TrialState.RUNNING] >= n_trials:
            return "claimed"
        queued = queue(study) if queue else "queued"
        if queued != "queued":
            return "finished" if queued == "done" else "claimed"
        try:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=callbacks)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as error:
            if isinstance(error, ValueError) and not str(error).startswith("Cannot tell a"):  # Optuna's words for it
                raise
            # This worker was silent past its heartbeats (stopped, suspended, starved): another worker
            # failed its trial and queued the configuration again. Nothing is lost; go on.
            print(
                "worker: this worker's trial was declared lost while it was not responding, and its configuration was "
                "queued again by another worker; going on with the next trial.", file=sys.stderr, flush=True,
            )
        return "ran"
    finally:
        gate.release()


def run_worker(
    spec: StudySpec,
    storage_url: str,
    worker_index: int = 0,
    data: TrialData | None = None,
    speed_profile: bool = True,
    progress: WorkerProgress | None = None,
) -> int:
    """Run trials until the study holds `spec.n_trials` finished (complete or pruned) trials, or time is up.

    Before the first trial, the device's speed profile is measured and stored on the study if
    it has none (unless `speed_profile` is off); a time budget needs it.
    """
    storage = open_storage(storage_url, spec.heartbeat_seconds, spec.storage_retry_seconds, wait=True)
    study = optuna.load_study(study_name=spec.name, storage=storage, pruner=build_pruner(spec))
    seed = sampler_seed(spec.sampler.seed, len(study.get_trials(deepcopy=False)), worker_index, socket.gethostname())
    study.sampler = build_sampler(spec, seed)
    device, device_name = worker_device()
    data = data or load_data(spec, device)
    gate = TrialGate(storage_url, spec.name, spec.storage_retry_seconds)
    profile = ensure_profile(study, spec, data, device_name, measure_if_missing=speed_profile)
    keeper = CheckpointKeeper.for_study(spec, storage_url, storage)
    if keeper is None and spec.checkpoints.keep != "none" and worker_index == 0:
        print("note: no trial weights are kept: a PostgreSQL study keeps them only in a folder every worker reaches; "
              "set checkpoints.dir in the study file.", file=sys.stderr, flush=True)
    objective = Objective(
        spec, data, device_name,
        progress=progress, on_start=gate.release,
        profile=profile, keeper=keeper,
    )
    finished: list[FrozenTrial] = []
    callbacks = [*([progress.on_trial] if progress else []), lambda _, trial: finished.append(trial)]
    deadline = time.monotonic() + spec.timeout_seconds if spec.timeout_seconds else float("inf")
    queue = functools.partial(queue_next, spec=spec) if spec.strategy == "frontier" else None
    while time.monotonic() < deadline and not STOP:
        try:
            turn = take_turn(study, gate, objective, spec.n_trials, callbacks, queue)
        except Exception:
            if storage.lost:  # whatever Optuna raised on the way out, the cause is the database
                raise storage.lost from None
            raise
        if turn == "finished":
            if keeper is not None:
                keeper.tidy(study)  # weights a failed trial left, when no later trial completed to clear them
            break
        if turn == "claimed":
            # The last trials are running elsewhere; wait in case their workers die.
            time.sleep(min(5.0, spec.heartbeat_seconds))
            continue
        recent = finished[-MAX_FAILURES_IN_A_ROW:]
        if len(recent) == MAX_FAILURES_IN_A_ROW and all(t.state == TrialState.FAIL for t in recent):
            print(f"worker {worker_index}: {MAX_FAILURES_IN_A_ROW} trials failed in a row "
                  f"({TrialRecord.of(recent[-1]).reason or 'see above'}); stopping this worker.", file=sys.stderr)
            return 1
    if STOP:
        print(f"worker {worker_index}: {STOP.reason}; run the same command again to resume the study.", file=sys.stderr, flush=True)
        return STOP.exit_code
    return 0

