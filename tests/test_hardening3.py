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


@pytest.mark.slow
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


BAD_VALIDATION = '''
import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _set(n: int, width: int = 8, high: int = 3) -> TensorDataset:
    g = torch.Generator().manual_seed(n)
    return TensorDataset(torch.randn(n, width, generator=g), torch.randint(0, high, (n,), generator=g))


def splits(kind: str) -> dict:
    val = {"labels": _set(32, high=9), "width": _set(32, width=5), "empty": _set(0)}[kind]
    return {"train": _set(256), "val": val}


class NoValidation(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.batch_size = 16

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_set(256), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):  # type: ignore[no-untyped-def]
        return None


class ReadOnlyBatch(pl.LightningDataModule):
    batch_size = property(lambda self: 16)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_set(256), batch_size=16)
'''


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"class_path": "badval.splits", "init_args": {"kind": "labels"}}, "out of bounds"),
        ({"class_path": "badval.splits", "init_args": {"kind": "width"}}, "cannot train"),
        ({"class_path": "badval.splits", "init_args": {"kind": "empty"}}, "validation data"),
        ({"class_path": "badval.NoValidation"}, "val_dataloader() returned None"),
        ({"class_path": "badval.ReadOnlyBatch"}, "cannot set"),
    ],
)
@pytest.mark.slow
def test_validation_data_is_checked_before_the_study_exists(data: dict, message: str, study_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def,type-arg]
    from tests.conftest import run_cli

    (tmp_path / "badval.py").write_text(BAD_VALIDATION)
    changes = {
        "dataset": None, "data": data, "model": {"name": None, "args": {}, "class_path": "badval.MLP"},
        "search_space": {"batch_size": [16, 32], "lr": {"low": 0.01, "high": 0.1}, "momentum": {"low": 0.5, "high": 0.9}},
        "budget_examples": 256, "pruner": {"name": "none", "args": {}},
    }
    path = study_file(changes)
    url = f"sqlite:///{tmp_path / 'val.sqlite3'}"
    ran = run_cli("search.run", "--study", str(path), "--storage", url, "--skip-speed-profile", cwd=tmp_path)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr, ran.stdout + ran.stderr
    assert message in " ".join(ran.stderr.split()), ran.stderr
    assert not (tmp_path / "val.sqlite3").exists()


def _refused(ran, *words: str) -> None:  # type: ignore[no-untyped-def]
    """Exit code 2, one paragraph naming `words`, no traceback."""
    error = " ".join(ran.stderr.split())
    assert ran.returncode == 2 and "Traceback" not in ran.stderr and all(w in error for w in words), ran.stdout + ran.stderr


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"logging": {"logger": "csv", "dir": "blocker/logs"}}, ("log folder", "is a file")),
        ({"checkpoints": {"keep": "best_k", "dir": "blocker/weights"}}, ("kept weights", "is a file")),
        ({"pruner": {"name": "hyperband", "args": {"reduction_factor": 1}}}, ("reduction_factor", "ZeroDivisionError")),
        ({"search_space": {"batch_size": {"min": 3, "max": 8}}}, ("search_space.batch_size: batch size bound 3 is not a power of two",)),
    ],
)
@pytest.mark.slow
def test_refused_runs_store_nothing(changes: dict, words: tuple[str, ...], study_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def,type-arg]
    from tests.conftest import run_cli

    (tmp_path / "blocker").write_text("a file where a folder would go")
    path = study_file(changes)
    ran = run_cli("search.run", "--study", str(path), "--skip-speed-profile", cwd=tmp_path)
    _refused(ran, *words)
    assert "function-after" not in ran.stderr and "constrained-int" not in ran.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["blocker", path.name])  # no database, no results/


@pytest.mark.slow
def test_a_time_budget_without_a_profile_leaves_no_database(study_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import run_cli

    path = study_file()
    ran = run_cli("search.run", "--study", str(path), "--budget-seconds", "2", "--skip-speed-profile", cwd=tmp_path)
    _refused(ran, "profile")
    assert not (tmp_path / "results" / f"{path.stem}.sqlite3").exists()


@pytest.mark.slow
def test_bad_values_on_the_command_line_and_in_files(study_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import run_cli

    path = study_file()
    _refused(run_cli("search.probe", "--study", str(path), "--batch-size", "0", cwd=tmp_path), "--batch-size must be at least 1")
    for top in ("0", "-5"):
        _refused(run_cli("search.best", "--study", str(path), "--top", top, cwd=tmp_path), "--top must be at least 1")
    twice = tmp_path / "twice.yaml"
    twice.write_text(path.read_text() + "budget_examples: 1024\n")
    _refused(run_cli("search.run", "--study", str(twice), cwd=tmp_path), "'budget_examples' is given twice")
    image = study_file({"dataset": {"name": "image_folder", "path": "/dev/zero"}})
    _refused(run_cli("search.run", "--study", str(image), cwd=tmp_path, timeout=60), "neither a regular file nor a folder")


@pytest.mark.slow
def test_the_data_cache_under_a_file_is_refused_and_a_damaged_one_rebuilt(image_folder: Path, study_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import run_cli

    path = study_file({"dataset": {"name": "image_folder", "path": str(image_folder), "val_size": 0.2}, "n_trials": 1})
    (tmp_path / "file").write_text("x")
    _refused(run_cli("search.run", "--study", str(path), "--skip-speed-profile", cwd=tmp_path, env={"SEARCH_CACHE_DIR": str(tmp_path / "file" / "cache")}),
             "data cache folder", "SEARCH_CACHE_DIR")
    cache = {"SEARCH_CACHE_DIR": str(tmp_path / "cache")}
    assert run_cli("search.run", "--study", str(path), "--skip-speed-profile", "--quiet", cwd=tmp_path, env=cache).returncode == 0
    (array,) = list((tmp_path / "cache").rglob("train_x.npy"))
    array.write_bytes(array.read_bytes()[:100])  # truncated, as a full disk or a kill would leave it
    again = run_cli("search.run", "--study", str(path), "--skip-speed-profile", "--quiet", "--n-trials", "2", cwd=tmp_path, env=cache)
    assert again.returncode == 0 and "is damaged" in again.stderr, again.stderr


def test_a_full_database_disk_is_said_at_once() -> None:
    import sqlalchemy

    from search.store.reconnect import Reconnecting, call_retrying

    def write() -> None:
        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))

    started = time.monotonic()
    with pytest.raises(UserError, match="disk is full"):
        call_retrying(write, Reconnecting())
    assert time.monotonic() - started < 5  # not the 120 s retry window


@pytest.mark.slow
def test_the_dashboard_refuses_a_busy_port_and_an_unknown_host(study_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import socket

    from tests.conftest import run_cli

    path = study_file({"n_trials": 1, "pruner": {"name": "none", "args": {}}})
    assert run_cli("search.run", "--study", str(path), "--skip-speed-profile", "--quiet", cwd=tmp_path).returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        ran = run_cli("search.dashboard", "--study", str(path), "--port", port, cwd=tmp_path, timeout=60)
    _refused(ran, f"Port {port}", "in use")
    assert "optuna-dashboard on" not in ran.stdout and "Listening" not in ran.stdout + ran.stderr
    _refused(run_cli("search.dashboard", "--study", str(path), "--host", "no-such-host.invalid", cwd=tmp_path, timeout=60), "--host")


@pytest.mark.slow
def test_a_report_is_written_whole_or_not_at_all(study_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from search import api, report
    from tests.conftest import run_cli

    path = study_file({"n_trials": 2, "pruner": {"name": "none", "args": {}}})
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    assert run_cli("search.run", "--study", str(path), "--storage", url, "--skip-speed-profile", "--quiet", cwd=tmp_path).returncode == 0
    out = tmp_path / "report"
    (out / "summary.json").mkdir(parents=True)
    assert report.main(["--study", str(path), "--storage", url, "--out", str(out)]) == 2
    assert "holds folders named summary.json" in " ".join(capsys.readouterr().err.split())
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]  # nothing else was moved in
    (out / "summary.json").rmdir()
    real = api.write_report

    def disk_fills(*args, **kwargs):  # type: ignore[no-untyped-def]
        real(*args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(api, "write_report", disk_fills)
    assert report.main(["--study", str(path), "--storage", url, "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert list(out.iterdir()) == [] and not list(tmp_path.glob(".report-*"))  # no half report, no staging left
    monkeypatch.setattr(api, "write_report", real)
    assert report.main(["--study", str(path), "--storage", url, "--out", str(out)]) == 0
    assert {"report.html", "summary.json", "best_per_batch_size.png"} <= {p.name for p in out.iterdir()}


def test_a_log_axis_spanning_less_than_a_decade_is_labelled() -> None:
    import matplotlib.pyplot as plt

    from search.render.figures import _label_log_axis, _log2_axis

    for values in ([0.2, 0.5], [0.1337, 1.278]):  # no major tick inside; one (1) inside, as on the README's figure
        figure, axis = plt.subplots()
        axis.plot([16, 1024], values)
        axis.set_yscale("log")
        _label_log_axis(axis)
        _log2_axis(axis, [16, 1024])  # the batch-size axis, set after, as every figure does
        figure.canvas.draw()
        labels = [t.get_text() for t in axis.get_yticklabels(minor=True) + axis.get_yticklabels() if t.get_text()]
        plt.close(figure)
        assert len([label for label in labels if label in ("0.2", "0.3", "0.4", "0.5")]) >= 2, (values, labels)


@pytest.mark.slow
def test_weights_a_failed_trial_left_are_tidied_when_the_study_finishes(study_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import optuna
    from optuna.artifacts import upload_artifact

    from search.record import TrialRecord
    from tests.conftest import run_cli

    path = study_file({"n_trials": 2, "pruner": {"name": "none", "args": {}}, "checkpoints": {"keep": "best_k", "k": 1}})
    url = f"sqlite:///{tmp_path / 'k.sqlite3'}"
    command = ("search.run", "--study", str(path), "--storage", url, "--skip-speed-profile", "--quiet")
    assert run_cli(*command, cwd=tmp_path).returncode == 0
    folder = tmp_path / path.stem / "artifacts"
    kept = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert len(kept) == 1
    # A trial that failed after its upload (a worker killed between the two), holding weights of its own.
    study = optuna.load_study(study_name=path.stem, storage=url)
    failed = study.ask({"batch_size": optuna.distributions.CategoricalDistribution([16, 32, 64])})
    (tmp_path / "w.pt").write_bytes(b"weights")
    artifact_id = upload_artifact(artifact_store=open_store(folder), file_path=str(tmp_path / "w.pt"), study_or_trial=failed)
    TrialRecord(checkpoint_artifact_id=artifact_id, checkpoint_path=str(folder / artifact_id)).store(failed)
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    assert len([p for p in folder.iterdir() if not p.name.startswith(".")]) == 2
    assert run_cli(*command, cwd=tmp_path).returncode == 0  # nothing left to run: the worker tidies and ends
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == kept


def test_a_read_only_working_directory_is_said_before_anything_is_written(study_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Root writes anywhere, so the check is made to see the working directory as a container's read-only root would."""
    from search import run
    from search.store import folders

    path = study_file()
    monkeypatch.chdir(tmp_path)
    real = os.access
    monkeypatch.setattr(folders.os, "access", lambda p, mode: False if Path(p).resolve() == tmp_path.resolve() else real(p, mode))
    assert run.main(["--study", str(path), "--skip-speed-profile"]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "is not writable" in error and "--storage sqlite:///WRITABLE/PATH.sqlite3" in error and "read-only file system" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
