"""A worker: one process on one device, running trials of a shared study.

Workers open their own storage connection (a connection must not cross fork()), load the
data from the cache onto their device once, and run trials until the study-wide total.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.config.spec import StudySpec
from search.data.source import TrialData, load_data
from search.errors import TrialFailed
from search.measure import speed
from search.store.storage import TrialGate, open_storage
from search.study.objective import Objective
from search.study.reporting import CheckpointListener
from search.study.pruners import build_pruner
from search.study.shutdown import STOP
from search.study.space import build_sampler
from search.train.device import worker_device

SPEC_ENV = "SEARCH_WORKER_SPEC"
TrialListener = Callable[[optuna.Study, FrozenTrial], None]
# Our own line per trial (with the reason of a failure) replaces Optuna's log of trials.
optuna.logging.set_verbosity(optuna.logging.ERROR)
MAX_FAILURES_IN_A_ROW = 5


def run_worker(
    spec: StudySpec,
    storage_url: str,
    worker_index: int = 0,
    data: TrialData | None = None,
    speed_profile: bool = True,
    on_checkpoint: CheckpointListener | None = None,
    on_trial: TrialListener | None = None,
) -> int:
    """Run trials until the study holds `spec.n_trials` finished (complete or pruned) trials, or time is up.

    Before the first trial, the device's speed profile is measured and stored on the study if
    it has none (unless `speed_profile` is off); a time budget needs it.
    """
    storage = open_storage(storage_url, spec.heartbeat_seconds, spec.storage_retry_seconds)
    study = optuna.load_study(
        study_name=spec.name, storage=storage, sampler=build_sampler(spec, worker_index), pruner=build_pruner(spec)
    )
    device, device_name = worker_device()
    data = data or load_data(spec, device)
    gate = TrialGate(storage_url, spec.name, spec.storage_retry_seconds)
    profile = speed.ensure_profile(study, spec, data, device_name, measure_if_missing=speed_profile)
    objective = Objective(
        spec, data, device_name,
        on_checkpoint=on_checkpoint, on_start=gate.release,
        profile=profile,
    )
    finished: list[FrozenTrial] = []
    deadline = time.monotonic() + spec.timeout_seconds if spec.timeout_seconds else float("inf")
    while time.monotonic() < deadline and not STOP:
        gate.acquire()
        try:
            # Fail (and re-queue) the trials of workers that died, so their slots free up.
            optuna.storages.fail_stale_trials(study)
            states = Counter(t.state for t in study.get_trials(deepcopy=False))
            done = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
            if spec.n_trials is not None and done >= spec.n_trials:
                break
            claimed = spec.n_trials is not None and done + states[TrialState.RUNNING] >= spec.n_trials
            if not claimed:
                study.optimize(
                    objective, n_trials=1, catch=(TrialFailed,), callbacks=[*([on_trial] if on_trial else []), lambda s, t: finished.append(t)]
                )
        except Exception:
            if storage.lost:  # whatever Optuna raised on the way out, the cause is the database
                raise storage.lost from None
            raise
        finally:
            gate.release()
        if claimed:
            # The last trials are running elsewhere; wait in case their workers die.
            time.sleep(min(5.0, spec.heartbeat_seconds))
            continue
        recent = finished[-MAX_FAILURES_IN_A_ROW:]
        if len(recent) == MAX_FAILURES_IN_A_ROW and all(t.state == TrialState.FAIL for t in recent):
            print(f"worker {worker_index}: {MAX_FAILURES_IN_A_ROW} trials failed in a row "
                  f"({recent[-1].user_attrs.get('reason', 'see above')}); stopping this worker.", file=sys.stderr)
            return 1
    if STOP:
        print(f"worker {worker_index}: {STOP.reason}; run the same command again to resume the study.", file=sys.stderr, flush=True)
        return STOP.exit_code
    return 0

