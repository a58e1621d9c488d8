"""Faults injected for real: killed workers, signals, a restarted or vanished PostgreSQL."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from search.config.load import load_spec
from search.errors import UserError
from search.store.storage import open_storage
from tests.conftest import Background, create_study, pg_ctl, run_cli

# Trials of a few seconds each, validated often: long enough to be hit mid-trial.
SLOW_TRIALS = {
    "budget_examples": 32768, "heartbeat_seconds": 1,
    "search_space": {"batch_size": [16]}, "pruner": {"name": "none", "report_every_examples": 2048, "args": {}},
}
CHECKPOINT = "examples  train_loss"


def states(url: str, name: str) -> Counter[str]:
    return Counter(t.state.name for t in optuna.load_study(study_name=name, storage=url).trials)


def worker_pids(parent: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_killed_mid_trial_is_failed_retried_and_the_study_completes(
    study_file: Callable[..., Path], tmp_path: Path, postgres_url: str, drop_studies
) -> None:  # type: ignore[no-untyped-def]
    path = study_file({**SLOW_TRIALS, "n_trials": 4})
    drop_studies(postgres_url, path.stem)
    run = Background("search.run", "--study", str(path), "--workers", "2", "--storage", postgres_url, cwd=tmp_path)
    run.wait_for(CHECKPOINT, count=2)
    victim = worker_pids(run.process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    assert run.wait() == 128 + signal.SIGKILL, run.output
    trials = optuna.load_study(study_name=path.stem, storage=postgres_url).trials
    counts = Counter(t.state for t in trials)
    assert counts == {TrialState.COMPLETE: 4, TrialState.FAIL: 1}, run.output
    lost = next(t for t in trials if t.state == TrialState.FAIL)
    assert lost.user_attrs["reason"] == "worker lost (no heartbeat)"
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == lost.number)
    assert retry.state == TrialState.COMPLETE and retry.params == lost.params and retry.user_attrs["reason"] == ""


@pytest.mark.slow
@pytest.mark.postgres
def test_sigint_ends_running_trials_with_a_reason_and_the_same_command_resumes(
    study_file: Callable[..., Path], tmp_path: Path, postgres_url: str, drop_studies
) -> None:  # type: ignore[no-untyped-def]
    path = study_file({**SLOW_TRIALS, "n_trials": 3})
    drop_studies(postgres_url, path.stem)
    command = ("search.run", "--study", str(path), "--workers", "2", "--storage", postgres_url)
    run = Background(*command, cwd=tmp_path)
    run.wait_for(CHECKPOINT, count=2)
    run.process.send_signal(signal.SIGINT)
    assert run.wait(timeout=60) == 130, run.output
    trials = optuna.load_study(study_name=path.stem, storage=postgres_url).trials
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert interrupted and all(t.user_attrs["reason"] == "interrupted (SIGINT)" for t in interrupted)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    queued = {t.user_attrs["retry_of"] for t in trials if t.state == TrialState.WAITING}
    assert queued == {t.number for t in interrupted}
    result = run_cli(*command, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert states(postgres_url, path.stem)["COMPLETE"] == 3
    assert states(postgres_url, path.stem).keys() <= {"COMPLETE", "FAIL"}


def _server_started(url: str) -> object:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as connection:
        return connection.execute(sqlalchemy.text("SELECT pg_postmaster_start_time()")).scalar()


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_ride_out_a_postgres_restart(
    study_file: Callable[..., Path], tmp_path: Path, postgres_url: str, drop_studies
) -> None:  # type: ignore[no-untyped-def]
    path = study_file({**SLOW_TRIALS, "n_trials": 5, "budget_examples": 16384, "pruner": {"name": "none", "report_every_examples": 1024, "args": {}}})
    drop_studies(postgres_url, path.stem)
    before = _server_started(postgres_url)
    run = Background("search.run", "--study", str(path), "--workers", "2", "--storage", postgres_url, cwd=tmp_path)
    run.wait_for(CHECKPOINT, count=3)
    pg_ctl("restart")
    assert _server_started(postgres_url) != before
    assert run.wait() == 0, run.output
    counts = states(postgres_url, path.stem)
    assert counts["COMPLETE"] == 5 and "RUNNING" not in counts and "WAITING" not in counts, counts


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_opening_the_storage_while_the_database_restarts_waits_for_it(postgres_url: str) -> None:
    """A worker starts after its study was created, so a refused connection then is a restart
    (the race that once failed a worker spawned mid-restart); the front process fails fast."""
    pg_ctl("stop")
    restart = threading.Timer(3.0, pg_ctl, args=("start",))
    try:
        with pytest.raises(UserError, match="Cannot open the study storage"):
            open_storage(postgres_url)
        restart.start()
        started = time.monotonic()
        storage = open_storage(postgres_url, retry_seconds=60, wait=True)
        assert time.monotonic() - started >= 2.5
        assert isinstance(storage.get_all_studies(), list)
    finally:
        restart.cancel()
        if restart.is_alive():
            restart.join()
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode != 0:
            pg_ctl("start")


@pytest.mark.slow
@pytest.mark.postgres
def test_a_database_gone_longer_than_the_retry_window_stops_cleanly_and_a_rerun_completes(
    study_file: Callable[..., Path], tmp_path: Path, postgres_url: str, drop_studies
) -> None:  # type: ignore[no-untyped-def]
    path = study_file({**SLOW_TRIALS, "n_trials": 2, "storage_retry_seconds": 2})
    drop_studies(postgres_url, path.stem)
    command = ("search.run", "--study", str(path), "--storage", postgres_url)
    run = Background(*command, cwd=tmp_path)
    run.wait_for(CHECKPOINT)
    pg_ctl("stop")
    try:
        assert run.wait(timeout=120) == 2, run.output
    finally:
        pg_ctl("start")
    assert "Lost the connection to the study database" in run.output and "Traceback" not in run.output
    result = run_cli(*command, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = states(postgres_url, path.stem)
    assert counts["COMPLETE"] == 2 and "RUNNING" not in counts, counts


@pytest.mark.slow
@pytest.mark.postgres
def test_eight_workers_from_two_hosts_keep_the_study_total_exact(
    study_file: Callable[..., Path], tmp_path: Path, postgres_url: str, drop_studies
) -> None:  # type: ignore[no-untyped-def]
    """Two independent `search.run` commands (separate process trees, environments and caches,
    as on two machines) with four workers each, against one PostgreSQL study."""
    path = study_file({"n_trials": 24})
    drop_studies(postgres_url, path.stem)
    hosts = []
    for host in ("host_a", "host_b"):
        home = tmp_path / host
        home.mkdir()
        env = {"SEARCH_STORAGE": postgres_url, "SEARCH_CACHE_DIR": str(home / "cache"), "HOME": str(home)}
        hosts.append(Background("search.run", "--study", str(path), "--workers", "4", "--quiet", cwd=home, env=env))
    assert [host.wait() for host in hosts] == [0, 0], "\n".join(h.output for h in hosts)
    trials = optuna.load_study(study_name=path.stem, storage=postgres_url).trials
    assert sorted(t.number for t in trials) == list(range(24))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) >= 4
    printed = sum(host.output.count(" ex/s") for host in hosts) - 2  # minus each host's "best" line
    assert printed == 24


@pytest.mark.slow
def test_out_of_memory_fails_that_trial_and_the_next_one_runs(study_file: Callable[..., Path], tmp_path: Path) -> None:
    """A real allocation failure: the worker runs under an address-space limit that a batch of
    4096 32x32 images through a wide CNN exceeds (about 4.5 GB) and a batch of 512 does not."""
    path = study_file({
        "n_trials": 1, "budget_examples": 4096, "min_steps": 1,
        "dataset": {"image_size": 32}, "model": {"args": {"width": 64}},
        "search_space": {"batch_size": [512, 4096]}, "pruner": {"name": "none", "report_every_examples": 4096, "args": {}},
    })
    url = f"sqlite:///{tmp_path / 'oom.sqlite3'}"
    spec = load_spec(str(path))
    study = create_study(url, spec)
    study.enqueue_trial({"batch_size": 4096, "lr": 0.1, "momentum": 0.9})
    study.enqueue_trial({"batch_size": 512, "lr": 0.1, "momentum": 0.9})
    limit = 2_500_000_000

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run(
        # No speed profile: it would split the 4096 batch into fast micro-batches that fit.
        [sys.executable, "-m", "search.run", "--study", str(path), "--storage", url, "--skip-speed-profile"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=limit_memory,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    too_big, fits = optuna.load_study(study_name=path.stem, storage=url).trials
    assert too_big.state == TrialState.FAIL and too_big.user_attrs["reason"] == "out_of_memory", result.stdout
    assert fits.state == TrialState.COMPLETE
    assert "(out_of_memory)" in result.stdout


@pytest.mark.slow
@pytest.mark.postgres
def test_32_workers_stay_within_postgres_connection_limits(tmp_path: Path, postgres_url: str, drop_studies) -> None:  # type: ignore[no-untyped-def]
    name = f"pool_{os.getpid()}"
    drop_studies(postgres_url, name)
    optuna.create_study(study_name=name, storage=postgres_url)
    engine = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as connection:
        max_connections = int(connection.execute(sqlalchemy.text("SHOW max_connections")).scalar())
    clients = [
        subprocess.Popen([sys.executable, "-m", "tests.pool_client", postgres_url, name, "3"], cwd=Path(__file__).parents[1],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(32)
    ]
    peak = 0
    with engine.connect() as connection:
        while any(client.poll() is None for client in clients):
            count = connection.execute(
                sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :app"), {"app": "batch-size-search"}
            ).scalar()
            connection.rollback()  # pg_stat_activity is a per-transaction snapshot
            peak = max(peak, int(count))
            time.sleep(0.05)
    outputs = [client.communicate()[0] for client in clients]
    assert [client.returncode for client in clients] == [0] * 32, "\n".join(outputs)
    assert peak <= 32 * 3 < max_connections, peak
    assert peak > 32  # the measurement saw the workers at all
    trials = optuna.load_study(study_name=name, storage=postgres_url).trials
    assert len(trials) == 96 and all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_opening_an_empty_database_at_once_create_optunas_tables_once() -> None:
    """Two Slurm array tasks starting together on a database without Optuna's tables collided
    ("duplicate key ... pg_type_typname_nsp_index"): four processes now open it at the same moment."""
    name = f"race_{os.getpid()}"
    admin = sqlalchemy.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    code = "import sys, time; from search.store.storage import open_storage; time.sleep(float(sys.argv[2]) - time.time()); open_storage(sys.argv[1])"
    start = time.time() + 3  # every process is imported and waiting before the moment comes
    processes = [subprocess.Popen([sys.executable, "-c", code, url, str(start)], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        errors = [process.communicate(timeout=120)[1] for process in processes]
        assert all(process.returncode == 0 for process in processes), errors
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
