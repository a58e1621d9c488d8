"""Hardening, third round (issue 22): URLs, atomic artifacts, study names, user code exiting, checks before the study exists."""
from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import pytest

from search.errors import UserError
from search.store.artifacts import PARTIAL_PREFIX, AtomicArtifactStore, open_store
from search.store.urls import backend, scrub


def test_a_password_with_an_unencoded_at_is_refused_before_connecting() -> None:
    url = "postgresql+psycopg2://bob:Wx7@Yv9secret@db.example/db"
    with pytest.raises(UserError) as refused:
        backend(url)
    assert "%40" in str(refused.value) and "Yv9secret" not in str(refused.value) and "Wx7" not in str(refused.value)
    assert backend("postgresql+psycopg2://bob:Wx7%40Yv9secret@db.example/db") == "postgresql"
    assert backend("sqlite:////tmp/a@b/c@d.sqlite3") == "sqlite"  # an @ in a file path is no password
    # Whatever a driver prints back, no piece of the password survives.
    said = 'could not translate host name "Yv9secret@db.example" to address; user bob password Wx7@Yv9secret'
    assert "Yv9secret" not in scrub(said, url) and "Wx7" not in scrub(said, url)


def test_an_artifact_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path / "artifacts")
    store.write("weights", io.BytesIO(b"complete"))
    assert (tmp_path / "artifacts" / "weights").read_bytes() == b"complete"

    def full_disk(source: io.BufferedIOBase, target: io.BufferedIOBase) -> None:
        target.write(source.read(3))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full_disk)
    with pytest.raises(OSError):
        store.write("weights", io.BytesIO(b"new weights, cut short"))
    assert (tmp_path / "artifacts" / "weights").read_bytes() == b"complete"  # the old one, never a truncated new one
    assert not list((tmp_path / "artifacts").glob(PARTIAL_PREFIX + "*"))


def test_what_a_killed_writer_left_is_swept(tmp_path: Path) -> None:
    folder = tmp_path / "artifacts"
    folder.mkdir()
    stale, fresh = folder / f"{PARTIAL_PREFIX}dead", folder / f"{PARTIAL_PREFIX}live"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert isinstance(open_store(folder), AtomicArtifactStore)
    assert not stale.exists() and fresh.exists()  # a writer still at work keeps its file


@pytest.mark.parametrize("name", [".", "..", ".hidden", "-flag"])
def test_study_names_that_would_escape_results_are_refused(name: str, study_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import run_cli

    path = study_file()
    ran = run_cli("search.run", "--study", str(path), f"--study-name={name}", "--skip-speed-profile", cwd=tmp_path)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr, ran.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing written beside the study file
    reported = run_cli("search.report", f"--study={name}", cwd=tmp_path)
    assert reported.returncode == 2 and "neither a study file nor a study name" in reported.stderr


@pytest.mark.slow
def test_evaluate_stops_on_sigterm_between_runs_and_says_what_it_will_cost(study_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import signal

    import optuna

    from tests.conftest import Background, run_cli

    path = study_file({"n_trials": 1, "pruner": {"name": "none", "args": {}}, "budget_examples": 2048})
    url = f"sqlite:///{tmp_path / 'stop.sqlite3'}"
    assert run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", "--skip-speed-profile", cwd=tmp_path).returncode == 0
    evaluating = Background("search.evaluate", "--study", str(path), "--storage", url, "--top", "1", "--seeds", "100000", cwd=tmp_path)
    evaluating.wait_for("100000 runs of 2,048 examples to train; about")
    evaluating.wait_for(" seed 0 ")  # the first run is done: the signal falls between runs or in the second
    evaluating.process.send_signal(signal.SIGTERM)
    assert evaluating.wait(timeout=120) == 143, evaluating.output
    assert "interrupted (SIGTERM): stopped after the current run" in evaluating.output and "Traceback" not in evaluating.output
    runs = optuna.load_study(study_name=f"{path.stem}:evaluation", storage=url).trials
    assert runs and not any(t.state == optuna.trial.TrialState.RUNNING for t in runs)


EXITING_NET = '''
import sys

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, when: str = "always") -> None:
        super().__init__()
        self.when = when
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.when == "always" or (self.when == "training" and self.training and len(x) > 2):
            sys.exit(0)
        return self.body(x)
'''


@pytest.mark.slow
@pytest.mark.parametrize("when", ["always", "training"])
def test_sys_exit_in_user_code_is_a_failure_never_success(when: str, study_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import optuna

    from tests.conftest import run_cli

    (tmp_path / "exiting.py").write_text(EXITING_NET)
    model = {"name": None, "args": {}, "class_path": "exiting.Net", "init_args": {"when": when}}
    path = study_file({"model": model, "n_trials": 2, "pruner": {"name": "none", "args": {}}})
    url = f"sqlite:///{tmp_path / 'exit.sqlite3'}"
    ran = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", "--skip-speed-profile", cwd=tmp_path)
    assert ran.returncode != 0 and "Traceback" not in ran.stderr, ran.stdout + ran.stderr
    if when == "always":  # the pre-check: one paragraph, exit 2, nothing stored
        assert ran.returncode == 2 and "called sys.exit(0)" in ran.stderr
        assert not (tmp_path / "exit.sqlite3").exists()
    else:  # during training: each trial fails with the reason, none is left RUNNING
        trials = optuna.load_study(study_name=path.stem, storage=url).trials
        assert trials and all(t.state == optuna.trial.TrialState.FAIL for t in trials)
        assert all("sys.exit(0)" in t.user_attrs.get("reason", "") for t in trials)
