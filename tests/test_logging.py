"""Training curves in the user's logger: one run per trial, named after the study and trial number."""
from __future__ import annotations

import csv
import importlib.util
import math
import os
from pathlib import Path
from typing import Callable

import optuna
import pytest
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState

from search import Study
from search.config.load import load_spec
from search.config.spec import LoggingSpec
from search.data.source import load_data
from search.study.reporting import ExamplesSeenReporter
from search.train.curves import TrainingCurves
from search.train.model import build_model, training_step
from search.train.plan import TrainingPlan
from search.train.run import train
from tests.conftest import REPO, create_study, run_cli

EVERY = 3  # optimizer steps between training points: 32 and 16 steps leave a tail, logged at the end
BUDGET = 512
CHECKPOINTS = [128, 256, 384, 512]  # the small study's report_every_examples, up to its budget
TRAINING_METRICS = ("train_loss", "lr", "examples_seen", "examples_per_second", "optimizer_step")
HYPERPARAMETERS = ("batch_size", "lr", "effective_lr", "momentum", "optimizer")

Series = dict[str, list[tuple[int, float]]]  # metric -> [(step = examples seen, value)]


def csv_series(run: Path) -> Series:
    series: Series = {}
    with open(run / "metrics.csv", newline="") as file:
        for row in csv.DictReader(file):
            step = int(row.pop("step"))
            for key, value in row.items():
                if value != "":
                    series.setdefault(key, []).append((step, float(value)))
    return series


def tensorboard_series(run: Path) -> Series:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected_training_steps(batch_size: int) -> list[int]:
    """Examples seen at each training point: every EVERY steps, and the last step."""
    steps = BUDGET // batch_size
    points = list(range(EVERY, steps + 1, EVERY))
    return [step * batch_size for step in points + ([steps] if steps % EVERY else [])]


def assert_trial_curves(series: Series, trial: FrozenTrial) -> None:
    batch_size = trial.params["batch_size"]
    for metric in TRAINING_METRICS:
        assert [step for step, _ in series[metric]] == expected_training_steps(batch_size), metric
    for step, value in series["examples_seen"]:
        assert value == step
    for step, value in series["optimizer_step"]:
        assert value * batch_size == step
    assert all(math.isfinite(value) and value > 0 for _, value in series["train_loss"] + series["examples_per_second"])
    lrs = [value for _, value in series["lr"]]
    assert 0 < lrs[0] and all(0 <= lr <= trial.user_attrs["effective_lr"] * 1.0001 for lr in lrs)  # warm-up, decay to 0
    # Validation at each checkpoint: the very values the trial reported to Optuna.
    assert [step for step, _ in series["val_loss"]] == CHECKPOINTS
    assert [step for step, _ in series["val_acc"]] == CHECKPOINTS
    for step, value in series["val_loss"]:
        assert value == pytest.approx(trial.intermediate_values[step], rel=1e-5)
    assert 0 <= min(value for _, value in series["val_acc"]) <= max(value for _, value in series["val_acc"]) <= 1


def assert_hyperparameters(run: Path, trial: FrozenTrial) -> None:
    logged = yaml.safe_load((run / "hparams.yaml").read_text())
    assert set(HYPERPARAMETERS) <= set(logged)
    assert logged["batch_size"] == trial.params["batch_size"] and logged["trial"] == trial.number
    assert logged["lr"] == pytest.approx(trial.params["lr"]) and logged["momentum"] == pytest.approx(trial.params["momentum"])
    assert logged["effective_lr"] == pytest.approx(trial.user_attrs["effective_lr"]) and logged["optimizer"] == "sgd"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["csv", "tensorboard"])
def test_each_trial_logs_its_curves(kind: str, study_file: Callable[..., Path], tmp_path: Path) -> None:
    if kind == "tensorboard":
        pytest.importorskip("tensorboard")
    path = study_file({
        "logging": {"logger": kind, "every_n_steps": EVERY}, "search_space": {"batch_size": [16, 32]},
        "pruner": {"name": "none", "args": {}}, "diagnostics": {"enabled": False}, "n_trials": 2,
    })
    result = run_cli("search.run", "--study", str(path), "--quiet", "--skip-speed-profile", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    name = path.stem
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'results' / f'{name}.sqlite3'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    logs = tmp_path / "results" / name / "logs" / name  # the default place: results/<study>/logs, experiment <study>
    assert sorted(p.name for p in logs.iterdir()) == [f"trial_{t.number}" for t in study.trials]
    for trial in study.trials:
        run = logs / f"trial_{trial.number}"
        assert_trial_curves(csv_series(run) if kind == "csv" else tensorboard_series(run), trial)
        assert_hyperparameters(run, trial)


def test_training_points_add_up_to_the_checkpoints(study_file: Callable[..., Path], tmp_path: Path) -> None:
    """Each train_loss point is the mean since the previous one, across the checkpoints' resets of the
    module's own sum: weighted by their examples, the points give the checkpoints' mean training loss."""
    spec = load_spec(str(study_file()))
    data = load_data(spec, torch.device("cpu"))
    plan = TrainingPlan(16, BUDGET // 16, 0.05, 0.9, 128, 0)  # points every 5 steps (80 examples) straddle the checkpoints
    curves = TrainingCurves.create(LoggingSpec(logger="csv", every_n_steps=5, dir=str(tmp_path)), "sums", "run", tmp_path, {"batch_size": 16})
    torch.manual_seed(0)
    step = training_step(spec, build_model(spec, data), data.device)
    log, _, _ = train(step, data, plan, spec.optimizer, spec.schedule, [ExamplesSeenReporter(optuna.create_study().ask())], curves)
    points = csv_series(tmp_path / "sums" / "run")["train_loss"]
    assert [seen for seen, _ in points] == [80, 160, 240, 320, 400, 480, 512]
    total = sum(loss * (seen - before) for (seen, loss), before in zip(points, [0] + [seen for seen, _ in points[:-1]]))
    assert [c.examples_seen for c in log.checkpoints] == CHECKPOINTS
    assert total / BUDGET == pytest.approx(sum(c.train_loss for c in log.checkpoints) / len(CHECKPOINTS), rel=1e-5)


@pytest.mark.slow
def test_a_lightning_module_logs_its_own_metrics_on_the_same_axis(tmp_path: Path) -> None:
    """examples/lightning_regression self.logs train_loss and val_loss: they go to the trial's run at
    examples seen, once each, next to the service's learning rate and speed."""
    example = REPO / "examples" / "lightning_regression"
    spec = yaml.safe_load((example / "study.yaml").read_text())
    spec.update(
        name="regression_curves", code_dir=str(example), budget_examples=BUDGET, n_trials=1,
        search_space={**spec["search_space"], "batch_size": [16]}, pruner={"name": "none", "report_every_examples": 128},
        logging={"logger": "csv", "every_n_steps": 4},
    )
    path = tmp_path / "regression_curves.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_cli("search.run", "--study", str(path), "--quiet", "--skip-speed-profile", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trial = optuna.load_study(study_name="regression_curves", storage=f"sqlite:///{tmp_path / 'results' / 'regression_curves.sqlite3'}").trials[0]
    series = csv_series(tmp_path / "results" / "regression_curves" / "logs" / "regression_curves" / "trial_0")
    every_4 = [step * 16 for step in range(4, BUDGET // 16 + 1, 4)]
    assert [step for step, _ in series["lr"]] == every_4
    assert [step for step, _ in series["train_loss"]] == every_4  # the model's own, not a second series of ours
    assert [step for step, _ in series["val_loss"]] == CHECKPOINTS
    for step, value in series["val_loss"]:
        assert value == pytest.approx(trial.intermediate_values[step], rel=1e-5)


def test_logger_none_writes_nothing(study_file: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = study_file({"logging": {"logger": "none"}, "checkpoints": {"keep": "none"}, "diagnostics": {"enabled": False}, "n_trials": 1})
    monkeypatch.chdir(tmp_path)
    study = Study.from_file(path, storage=f"sqlite:///{tmp_path / 'none.sqlite3'}")
    assert study.run(quiet=True, speed_profile=False) == 0
    assert study.optuna_study().trials[0].state == TrialState.COMPLETE
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, "none.sqlite3"])  # no results/, no lightning_logs/


@pytest.mark.slow
def test_mlflow_without_its_package_is_one_paragraph(study_file: Callable[..., Path], tmp_path: Path) -> None:
    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    path = study_file({"logging": {"logger": "mlflow"}})
    result = run_cli("search.run", "--study", str(path), "--skip-speed-profile", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and all(line.startswith("  ") for line in lines[1:]), result.stderr
    assert "pip install mlflow" in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.sqlite3")) and not (tmp_path / "results").exists()  # nothing stored


@pytest.mark.slow
def test_evaluate_checks_the_logger_first(study_file: Callable[..., Path], tmp_path: Path) -> None:
    """search.evaluate retrains with the stored spec's logger: a missing package stops it before the evaluation study exists."""
    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    path = study_file({"logging": {"logger": "mlflow"}})
    url = f"sqlite:///{tmp_path / 'stored.sqlite3'}"
    create_study(url, load_spec(str(path)))
    result = run_cli("search.evaluate", "--study", path.stem, "--storage", url, "--top", "1", "--seeds", "1", cwd=tmp_path)
    assert result.returncode == 2 and "pip install mlflow" in " ".join(result.stderr.split()), result.stdout + result.stderr
    assert optuna.get_all_study_names(url) == [path.stem]
