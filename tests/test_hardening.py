"""What a careless user, an attacker or a busy machine does, beyond the table of bad inputs:
secrets in URLs, data that must never be mixed, reruns that must not repeat themselves,
interrupted decodes, measurements that must not pin a study, noisy speed profiles."""
from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch

from search.config.load import load_spec
from search.data import images
from search.errors import Interrupted
from search.measure.profile import SizeSpeed, SpeedProfile
from search.store.measurements import MEASUREMENTS_STUDY
from search.store.measurements import store_profile as store
from search.store.urls import redact
from search.study.measured import ensure_profile
from search.study.space import sampler_seed
from tests.conftest import REPO, run_cli, write_image_folder


@pytest.mark.parametrize("url, hidden, shown", [
    ("postgresql+psycopg2://u:S3cret@host/db", "S3cret", "postgresql+psycopg2://u:***@host/db"),
    ("postgresql+psycopg2://u:Right@Pass77@host/db", "Pass77", "postgresql+psycopg2://u:***@host/db"),
    ("postgresql+psycopg2://postgres@127.0.0.1:1/x?password=S3cret&sslmode=require", "S3cret", "?password=***&sslmode=require"),
    ("postgresql://a:b/c@h:5/d?PWD=x1y2&application_name=z", "x1y2", "postgresql://a:***@h:5/d?PWD=***&application_name=z"),
])
def test_redact_hides_every_password(url: str, hidden: str, shown: str) -> None:
    assert hidden not in redact(url) and shown in redact(url)


@pytest.mark.slow
def test_resume_follows_the_data_not_its_path(tmp_path: Path) -> None:
    """A moved copy of the data resumes the study; other data under the same study never does."""
    first, other = write_image_folder(tmp_path / "a", classes=3, size=16), write_image_folder(tmp_path / "b", classes=4, size=20)
    spec_file = tmp_path / "folder.yaml"
    spec_file.write_text(
        "dataset: {name: image_folder, val_size: 0.25}\nmodel: {name: tiny_cnn, args: {width: 4}}\nbudget_examples: 128\nmin_steps: 2\n"
        "search_space: {batch_size: [16, 32], lr: {low: 0.01, high: 0.1, log: true}, momentum: {low: 0.5, high: 0.9}}\n"
        "pruner: {name: none, report_every_examples: 64}\ndiagnostics: {enabled: false}\nn_trials: 1\n"
    )
    url = f"sqlite:///{tmp_path / 'data.sqlite3'}"
    common = ("--study", str(spec_file), "--storage", url, "--quiet", "--skip-speed-profile")
    assert run_cli("search.run", *common, "--data", str(first), cwd=tmp_path).returncode == 0
    refused = run_cli("search.run", *common, "--data", str(other), "--n-trials", "2", cwd=tmp_path)
    assert refused.returncode == 2 and "data_fingerprint" in refused.stderr, refused.stderr
    moved = shutil.copytree(first, tmp_path / "moved")
    resumed = run_cli("search.run", *common, "--data", str(moved), "--n-trials", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(optuna.load_study(study_name="folder", storage=url).trials) == 2


@pytest.mark.slow
def test_reruns_and_workers_draw_fresh_points(study_file: Callable[..., Path], tmp_path: Path) -> None:
    assert sampler_seed(7) == 7  # a study's first run draws from its stored seed
    seeds = {sampler_seed(7, trials, worker, host) for trials in (0, 3) for worker in (0, 1) for host in ("", "node-2")}
    assert len(seeds) == 8 and sampler_seed(7, 3, 1, "node-2") == sampler_seed(7, 3, 1, "node-2")
    path = study_file({"sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 10}, "pruner": {"name": "none", "args": {}}})
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    for total in ("1", "2"):
        assert run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", "--skip-speed-profile", "--n-trials", total, cwd=REPO).returncode == 0
    first, second = optuna.load_study(study_name=path.stem, storage=url).trials
    assert first.params != second.params


def _live_children() -> set[str]:
    """This process's child processes that are still running (zombies excluded)."""
    children = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout.split()
    alive = set()
    for child in children:
        try:
            if Path(f"/proc/{child}/stat").read_text().split()[2] != "Z":
                alive.add(child)
        except OSError:
            pass
    return alive


def test_signals_while_decoding_stop_the_decoders_and_store_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM arrives while the folder is being decoded (sent by the reading itself, so the timing is exact)."""
    folder = write_image_folder(tmp_path / "images", classes=2, size=16, per_class=600)
    monkeypatch.setenv("SEARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(images, "_CHUNK", 64)  # several decoding jobs, so the pool has started
    read = images._folder_members

    def members_then_sigterm(root: Path):  # type: ignore[no-untyped-def]
        for index, member in enumerate(read(root)):
            if index == 500:
                os.kill(os.getpid(), signal.SIGTERM)
            yield member

    monkeypatch.setattr(images, "_folder_members", members_then_sigterm)
    spec = load_spec(str(REPO / "studies" / "smoke.yaml"), {"dataset.name": "image_folder", "dataset.path": str(folder)})
    before, handler = _live_children(), signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as stopped:
        images.load_dataset(spec.dataset)
    assert stopped.value.exit_code == 143 and "SIGTERM while decoding" in str(stopped.value)
    deadline = time.monotonic() + 10  # terminated decoders take a moment to exit
    while _live_children() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _live_children() - before, "decoder processes outlived the interrupted decode"
    assert not (tmp_path / "cache" / "decoded").exists() or not any((tmp_path / "cache" / "decoded").iterdir())
    assert signal.getsignal(signal.SIGTERM) == handler  # decoding's own handler is gone: the one before it is back


@pytest.mark.slow
def test_measuring_never_creates_or_pins_the_study(study_file: Callable[..., Path], tmp_path: Path) -> None:
    """The README's sequence: search.speed, then search.run with a time budget; a probe, then another budget."""
    path = study_file({"pruner": {"name": "none", "args": {}}, "diagnostics": {"enabled": False}})
    url = f"sqlite:///{tmp_path / 'measured.sqlite3'}"
    measured = run_cli("search.speed", "--study", str(path), "--storage", url, cwd=REPO)
    assert measured.returncode == 0, measured.stderr
    assert optuna.get_all_study_names(url) == [MEASUREMENTS_STUDY]  # measured, no study created
    probed = run_cli("search.probe", "--study", str(path), "--storage", url, "--train-examples", "64", "--points", "1",
                     "--measurements", "2", "--small-batch", "4", "--big-batch", "16", cwd=REPO)
    assert probed.returncode == 0, probed.stderr
    timed = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", "--budget-seconds", "3", "--n-trials", "1", cwd=REPO)
    assert timed.returncode == 0, timed.stderr
    assert "no profile" not in timed.stdout  # the profile search.speed saved served the run
    study = optuna.load_study(study_name=path.stem, storage=url)
    assert any(k.startswith("speed_profile:") for k in study.user_attrs) and any(k.startswith("noise_scale_probe:") for k in study.user_attrs)
    other = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", "--study-name", "other_budget",
                    "--budget-examples", "256", "--n-trials", "1", cwd=REPO)
    assert other.returncode == 0, other.stderr  # the probe pinned nothing: any budget starts a study


def _profile(rates: dict[int, tuple[float, float, float]]) -> SpeedProfile:
    sizes = tuple(SizeSpeed(b, median, slow, fast, 5, 2, 1000) for b, (median, slow, fast) in rates.items())
    return SpeedProfile("cpu (test)", "tiny_cnn", sizes, "estimate", "largest", "now", 1.0)


def test_trials_correct_the_profile_and_a_noisy_profile_is_flagged_for_a_time_budget(
    study_file: Callable[..., Path], capsys: pytest.CaptureFixture[str],
) -> None:
    profile = _profile({16: (900.0, 850.0, 950.0), 64: (1000.0, 300.0, 1100.0)})
    assert profile.noisy_sizes() == [64]
    corrected = profile.corrected({64: 7400.0, 32: 5000.0})
    assert corrected.rate(64) == 7400.0 and corrected.rate(32) == 5000.0
    # 16 was never trained: scaled by the median observed/profiled ratio (64: 7.4x, 32: 5000 / interpolated 948.7 = 5.27x)
    assert corrected.rate(16) == pytest.approx(900.0 * statistics.median([7.4, 5000.0 / profile.rate(32)]))
    spec = load_spec(str(study_file({"budget_seconds": 1.0, "min_steps": 1, "pruner": {"name": "none", "args": {}}})))
    study = optuna.create_study()
    store(study, profile.__class__(**{**profile.__dict__, "device": "cpu (test)"}))
    from search.data.source import load_data

    data = load_data(spec, torch.device("cpu"))
    assert ensure_profile(study, spec, data, "cpu (test)", measure_if_missing=False) == profile
    assert "measured while the device was busy (at batch sizes 64" in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_every_command_says_what_it_does_with_an_example(tmp_path: Path) -> None:
    commands = ("run", "best", "report", "evaluate", "dashboard", "probe", "speed")
    helps = {  # started together: each is mostly the imports
        command: subprocess.Popen([sys.executable, "-m", f"search.{command}", "--help"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    }
    for command, process in helps.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert "examples:" in stdout and f"python -m search.{command} --study" in stdout


@pytest.mark.slow
def test_a_run_shows_progress_with_an_eta_and_warns_about_uneven_budgets(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file({"budget_examples": 500, "pruner": {"name": "none", "args": {}}, "n_trials": 2, "diagnostics": {"enabled": False}})
    result = run_cli("search.run", "--study", str(path), "--storage", f"sqlite:///{tmp_path / 'eta.sqlite3'}", "--skip-speed-profile", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "warning  the budget (500) is not a multiple of every batch size" in result.stdout and "B=64 trains 448 examples" in result.stdout
    checkpoints = [line for line in result.stdout.splitlines() if line.startswith("  trial")]
    assert checkpoints and all("elapsed" in line and "ex/s" in line for line in checkpoints)
    assert "study    1/2 finished" in result.stdout and "ETA" in result.stdout and "study    2/2 finished" in result.stdout
    (tmp_path / "a_file").write_text("not a folder")
    for out in (tmp_path / "a_file", Path("/dev/null/report")):
        refused = run_cli("search.report", "--study", path.stem, "--storage", f"sqlite:///{tmp_path / 'eta.sqlite3'}", "--out", str(out), cwd=REPO)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert "--out" in refused.stderr or "report folder" in refused.stderr, refused.stderr


def test_other_commands_refuse_bad_arguments_in_one_paragraph(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.sqlite3'}"
    for command, args, words in [
        ("search.best", ["--study", "x" * 600, "--storage", url], "neither a study file nor a study name"),
        ("search.report", ["--study", "x" * 600], "neither a study file nor a study name"),
        ("search.dashboard", ["--port", "99999", "--storage", url], "not a TCP port"),
    ]:
        result = run_cli(command, *args, cwd=tmp_path)
        assert result.returncode == 2 and words in " ".join(result.stderr.split()) and "Traceback" not in result.stderr, (command, result.stderr)


def test_a_read_only_sqlite_file_is_refused_before_anything_is_written(study_file: Callable[..., Path], tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Root writes through file permissions, so the check is made to see a read-only file as another user would."""
    from search.run import main
    from search.store import storage

    database = tmp_path / "read_only.sqlite3"
    url = f"sqlite:///{database}"
    optuna.create_study(storage=url, study_name="someone_elses")
    before = database.read_bytes()
    real_access = os.access
    monkeypatch.setattr(storage.os, "access", lambda path, mode: False if Path(path) == database else real_access(path, mode))
    assert main(["--study", str(study_file()), "--storage", url]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "is not writable" in error and "Traceback" not in error
    assert database.read_bytes() == before


def test_a_worker_whose_trial_was_declared_lost_goes_on(study_file: Callable[..., Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A worker stopped (SIGSTOP) past its heartbeats finds, when it resumes, its trial failed by another worker and
    re-queued. Here another connection fails the running trial at its first validation; the worker says so and goes on."""
    import lightning.pytorch as pl
    from optuna.trial import TrialState

    from search.data.source import load_data
    from search.store.storage import create_or_resume, open_storage
    from search.study.objective import Objective
    from search.study.pruners import build_pruner
    from search.study.space import build_sampler
    from search.study.worker import take_turn

    spec = load_spec(str(study_file({"pruner": {"name": "none", "args": {}}, "diagnostics": {"enabled": False}})))
    url = f"sqlite:///{tmp_path / 'lost.sqlite3'}"
    data = load_data(spec, torch.device("cpu"))
    study = create_or_resume(open_storage(url), spec, build_sampler(spec), build_pruner(spec), data_fingerprint=data.fingerprint)

    class DeclaredLost(pl.Callback):
        def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            other = open_storage(url)
            running = [t for t in other.get_all_trials(other.get_study_id_from_name(spec.name)) if t.state == TrialState.RUNNING]
            for trial in running:
                other.set_trial_state_values(trial._trial_id, TrialState.FAIL)

    class NoGate:
        def acquire(self) -> None: ...

        def release(self) -> None: ...

    objective = Objective(spec, data, "cpu", callbacks=[DeclaredLost()])
    assert take_turn(study, NoGate(), objective, n_trials=3, callbacks=[]) == "ran"
    assert "declared lost while it was not responding" in capsys.readouterr().err
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]
    assert take_turn(study, NoGate(), Objective(spec, data, "cpu"), n_trials=3, callbacks=[]) == "ran"  # and goes on
    assert study.get_trials()[-1].state in (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.slow
def test_a_time_budget_too_short_for_the_device_is_refused_before_the_study_exists(study_file: Callable[..., Path], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'short.sqlite3'}"
    path = study_file({"pruner": {"name": "none", "args": {}}})
    refused = run_cli("search.run", "--study", str(path), "--storage", url, "--budget-seconds", "0.001", cwd=REPO)
    assert refused.returncode == 2 and "raise --budget-seconds to at least" in " ".join(refused.stderr.split()), refused.stderr
    assert optuna.get_all_study_names(url) == [MEASUREMENTS_STUDY]  # the profile was measured and kept; no study pinned
    again = run_cli("search.run", "--study", str(path), "--storage", url, "--budget-seconds", "2", "--n-trials", "1", "--quiet", cwd=REPO)
    assert again.returncode == 0, again.stderr  # the same study name, another budget: nothing was pinned
