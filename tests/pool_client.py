"""A storage-only worker for the connection-count test: our storage, heartbeat and trial gate
with a trivial objective (10 reports each), so 32 of them fit on a 2-core machine."""
from __future__ import annotations

import sys
import time

import optuna

from search.store.storage import TrialGate, open_storage

url, name, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
storage = open_storage(url, heartbeat_seconds=1)
study = optuna.load_study(study_name=name, storage=storage)
gate = TrialGate(url, name)


def objective(trial: optuna.Trial) -> float:
    gate.release()
    x = trial.suggest_float("x", 0.0, 1.0)
    for step in range(10):
        trial.report(x, step)
        trial.should_prune()
        time.sleep(0.02)
    return x


for _ in range(trials):
    gate.acquire()
    try:
        study.optimize(objective, n_trials=1)
    finally:
        gate.release()
