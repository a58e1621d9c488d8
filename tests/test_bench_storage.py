"""The storage benchmark's measurement on the storages that need no server: 1 worker, 1 s each."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from bench.storage import Config, Locations, measure, seed_trials, study_spec


@pytest.mark.slow
def test_a_worker_process_runs_trials_and_times_its_storage_calls(tmp_path: Path) -> None:
    seeds = seed_trials(study_spec())
    where = Locations(postgresql="postgresql+psycopg2://unused", folder=tmp_path)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for kind in ("sqlite", "journal"):
            result = measure(Config(kind, 1, 0.0), pool, where, seeds, window=1.0, tag="test")
            assert result.errors == []
            assert result.trials >= 1 and result.trials_per_second > 0
            assert len(result.report_ms) >= result.trials and result.should_prune_ms
            assert result.storage_ms_per_trial > 0 and result.gate_ms_per_trial == 0
