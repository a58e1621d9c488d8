"""A worker: one process on one device, running trials of a shared study.

Workers open their own storage connection (a connection must not cross fork()), load the
data from the cache onto their device once, and run trials until the study-wide total.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections import Counter

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from search import speed
from search.batches import DeviceData
from search.data import ImageData, load_dataset, stratified_split
from search.errors import TrialFailed, exits_on_user_error
from search.objective import Objective
from search.progress import checkpoint_line, print_trial
from search.pruners import build_pruner
from search.shutdown import STOP
from search.space import build_sampler
from search.spec import StudySpec
from search.storage import STORAGE_ENV, TrialGate, open_storage

SPEC_ENV = "SEARCH_WORKER_SPEC"
# Our own line per trial (with the reason of a failure) replaces Optuna's log of trials.
optuna.logging.set_verbosity(optuna.logging.ERROR)
MAX_FAILURES_IN_A_ROW = 5


def worker_device() -> tuple[torch.device, str]:
    """The GPU this process was pinned to (CUDA_VISIBLE_DEVICES), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", 0), torch.cuda.get_device_name(0)
    return torch.device("cpu"), f"cpu ({torch.get_num_threads()} threads)"


def device_data(spec: StudySpec, images: ImageData, device: torch.device) -> DeviceData:
    train_index, val_index = stratified_split(images.train_labels, spec.dataset.val_size, spec.dataset.split_seed)
    return DeviceData(images.train_images, images.train_labels, train_index, val_index, device)


def run_worker(
    spec: StudySpec, storage_url: str, worker_index: int = 0, images: ImageData | None = None, quiet: bool = False, speed_profile: bool = True,
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
    images = images or load_dataset(spec.dataset)
    gate = TrialGate(storage_url, spec.name, spec.storage_retry_seconds)
    data = device_data(spec, images, device)
    profile = speed.ensure_profile(study, spec, data, images.num_classes, device_name, measure_if_missing=speed_profile)
    objective = Objective(
        spec, data, images.num_classes, device_name,
        on_checkpoint=None if quiet else functools.partial(checkpoint_line, None if spec.budget_seconds else spec.budget_examples), on_start=gate.release,
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
                    objective, n_trials=1, catch=(TrialFailed,), callbacks=[print_trial, lambda s, t: finished.append(t)]
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


@exits_on_user_error
def main() -> int:
    """Entry point of the worker processes that `search.run` starts (not for direct use)."""
    spec = StudySpec.model_validate(json.loads(os.environ[SPEC_ENV]))
    STOP.install()
    threads = os.environ.get("SEARCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    return run_worker(
        spec, os.environ[STORAGE_ENV], worker_index=int(sys.argv[1]), quiet="--quiet" in sys.argv,
        speed_profile="--skip-speed-profile" not in sys.argv,
    )


if __name__ == "__main__":
    sys.exit(main())
