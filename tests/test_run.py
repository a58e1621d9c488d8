"""`python -m search.run` end to end, as real subprocesses, on SQLite and on PostgreSQL."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import optuna
import pytest
from optuna.trial import TrialState

from search.config.load import load_spec
from tests.conftest import create_study, run_cli

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.sqlite3'}"


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


@pytest.mark.slow
def test_default_embedded_storage_end_to_end(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file()
    result = run_cli("search.run", "--study", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("examples  train_loss") >= 3  # progress at validation checkpoints
    trial_lines = [line for line in result.stdout.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == 3 and all("ex/s" in line and "B=" in line for line in trial_lines)
    database = tmp_path / "results" / f"{path.stem}.sqlite3"
    assert f"optuna-dashboard sqlite:///{database}" in result.stdout
    study = load(f"sqlite:///{database}", path.stem)
    assert len(study.trials) == 3 and all(t.state in FINISHED for t in study.trials)
    assert study.user_attrs["budget_examples"] == 512


@pytest.mark.slow
@pytest.mark.parametrize("form", ["cifar_python", "image_folder_tar", "image_folder"])
def test_every_data_form_runs(form: str, request: pytest.FixtureRequest, study_file: Callable[..., Path], tmp_path: Path) -> None:
    data = {"cifar_python": "cifar_python_archive", "image_folder_tar": "image_folder_tar", "image_folder": "image_folder"}[form]
    name = "cifar10" if form == "cifar_python" else "image_folder"
    path = study_file({"dataset": {"name": name, "val_size": 0.2}, "n_trials": 1})
    result = run_cli("search.run", "--study", str(path), "--data", str(request.getfixturevalue(data)), "--storage", sqlite_url(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trial = load(sqlite_url(tmp_path), path.stem).trials[0]
    assert trial.state == TrialState.COMPLETE and trial.value is not None


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_end_to_end(study_file: Callable[..., Path], tmp_path: Path, postgres_url: str, drop_studies) -> None:  # type: ignore[no-untyped-def]
    path = study_file()
    drop_studies(postgres_url, path.stem)
    result = run_cli("search.run", "--study", str(path), cwd=tmp_path, env={"SEARCH_STORAGE": postgres_url})
    assert result.returncode == 0, result.stderr
    study = load(postgres_url, path.stem)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state in FINISHED and t.user_attrs["examples_seen"] > 0 for t in study.trials)
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_share_one_study_exactly(study_file: Callable[..., Path], tmp_path: Path, postgres_url: str, drop_studies) -> None:  # type: ignore[no-untyped-def]
    path = study_file({"n_trials": 6})
    drop_studies(postgres_url, path.stem)
    result = run_cli("search.run", "--study", str(path), "--workers", "2", "--storage", postgres_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trials = load(postgres_url, path.stem).trials
    assert sorted(t.number for t in trials) == list(range(6))  # no duplicate, lost or extra trial
    assert all(t.state in FINISHED for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2


@pytest.mark.slow
def test_rerun_resumes_the_study(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path, url = study_file({"n_trials": 2}), sqlite_url(tmp_path)
    assert run_cli("search.run", "--study", str(path), "--storage", url, cwd=tmp_path).returncode == 0
    first = load(url, path.stem).trials
    result = run_cli("search.run", "--study", str(path), "--storage", url, "--n-trials", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trials = load(url, path.stem).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [(t.params, t.value, t.datetime_start) for t in trials[:2]] == [(t.params, t.value, t.datetime_start) for t in first]
    again = run_cli("search.run", "--study", str(path), "--storage", url, "--n-trials", "4", cwd=tmp_path)
    assert again.returncode == 0 and len(load(url, path.stem).trials) == 4


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path, url = study_file({"n_trials": 1}), sqlite_url(tmp_path)
    assert run_cli("search.run", "--study", str(path), "--storage", url, cwd=tmp_path).returncode == 0
    result = run_cli("search.run", "--study", str(path), "--storage", url, "--budget-examples", "1024", cwd=tmp_path)
    assert result.returncode == 2 and "budget_examples" in result.stderr and "--study-name" in result.stderr
    assert len(load(url, path.stem).trials) == 1


@pytest.mark.slow
def test_pruning_stops_a_bad_trial_early(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file({"n_trials": 2, "search_space": {"lr": {"low": 1e-7, "high": 1.0}}})
    url = sqlite_url(tmp_path)
    spec = load_spec(str(path))
    study = create_study(url, spec)
    study.enqueue_trial({"batch_size": 16, "lr": 0.3, "momentum": 0.9})
    study.enqueue_trial({"batch_size": 16, "lr": 1e-7, "momentum": 0.5})
    result = run_cli("search.run", "--study", str(path), "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    good, bad = load(url, path.stem).trials
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED
    assert bad.user_attrs["reason"] == "pruned at 128 examples"
    assert bad.user_attrs["examples_seen"] < good.user_attrs["examples_seen"]


@pytest.mark.slow
def test_several_workers_on_sqlite_are_refused(study_file: Callable[..., Path], tmp_path: Path) -> None:
    result = run_cli("search.run", "--study", str(study_file()), "--workers", "2", cwd=tmp_path)
    assert result.returncode == 2 and "PostgreSQL" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--study", "no_such_study"], "No study file"),
        (["--budget-examples", "100"], "fewer than min_steps"),
        (["--data", "/nonexistent/cifar.tar.gz"], "not found"),
        (["--storage", "postgresql+psycopg2://nobody@127.0.0.1:1/none"], "Cannot open the study storage"),
        (["--storage", "mongodb://x"], "not supported"),
        (["--workers", "many"], "--workers"),
    ],
)
@pytest.mark.slow
def test_user_errors_exit_2_with_a_message_and_write_nothing(args: list[str], message: str, study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file({"dataset": {"name": "image_folder", "path": "/nonexistent"}} if "--data" in args else None)
    result = run_cli("search.run", *(["--study", str(path)] if "--study" not in args else []), *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_sigterm_stops_the_trial_with_a_reason_and_a_rerun_resumes(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file({
        "n_trials": 1, "budget_examples": 98304,
        "search_space": {"batch_size": [16]}, "pruner": {"name": "none", "report_every_examples": 2048, "args": {}},
    })
    url = sqlite_url(tmp_path)
    command = [sys.executable, "-m", "search.run", "--study", str(path), "--storage", url]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # wait until training is under way
        if "examples  train_loss" in line:
            break
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    interrupted, queued = load(url, path.stem).trials
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["reason"] == "interrupted (SIGTERM)"
    assert queued.state == TrialState.WAITING and queued.user_attrs["retry_of"] == interrupted.number
    result = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    resumed = load(url, path.stem).trials[1]
    assert resumed.state == TrialState.COMPLETE and resumed.params == interrupted.params
