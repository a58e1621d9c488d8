"""The user's own code by class path (the two projects in examples/): real training, real subprocesses, tiny budgets.

Each example study runs once (module-scoped, one trial per batch size enqueued so that every size is
trained) and is then read by search.best, search.report, search.evaluate and the budget checks. The
bad studies run in one subprocess (`python -m tests.test_user_code`): importing torch and Lightning
takes seconds of CPU per process, most of what such a run costs.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import sys
import tempfile
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any, Iterator

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from search.config.load import load_spec, validate_spec
from search.data import user
from search.data.user import DataModuleData, DatasetData, load_user_data
from search.store.trials import EVALUATION_SUFFIX
from search.study import space
from search.study.reporting import ExamplesSeenReporter
from search.train.model import build_model, training_step
from search.train.module import TrialModule
from search.train.plan import make_plan
from search.train.run import train
from tests.conftest import REPO, create_study, run_cli

EXAMPLES = REPO / "examples"
TABULAR = EXAMPLES / "tabular_mlp" / "study.yaml"
REGRESSION = EXAMPLES / "lightning_regression" / "study.yaml"
BATCH_SIZES = (8, 16, 32, 64)  # both examples' search space
BUDGET = 512  # 8 steps at the largest batch size: the least min_steps allows
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
CPU = torch.device("cpu")
USER_MODULES = ("cancer", "diabetes", "streamdata")


@contextlib.contextmanager
def user_imports() -> Iterator[None]:
    """In-process code that imports the user's modules (class paths add their folders to sys.path): undo both."""
    path = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = path
        for name in USER_MODULES:
            sys.modules.pop(name, None)


@pytest.fixture
def isolated_imports() -> Iterator[None]:
    with user_imports():
        yield


@dataclass
class ExampleRun:
    study: Path
    name: str
    url: str
    folder: Path
    process: Future[CompletedProcess[str]]

    @property
    def result(self) -> CompletedProcess[str]:
        return self.process.result()

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=self.name, storage=self.url).trials


def start_example(pool: ThreadPoolExecutor, study: Path, folder: Path, lr: float, momentum: float) -> ExampleRun:
    """search.run on an example study file as shipped (budget and trial count lowered on the command
    line), from a folder that is not the example's: its class paths resolve from the study file's folder."""
    name = f"{study.parent.name}_{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{folder / 'study.sqlite3'}"
    spec = load_spec(str(study), {"name": name, "budget_examples": BUDGET, "n_trials": len(BATCH_SIZES)})
    with user_imports():
        created = create_study(url, spec)
    for batch_size in BATCH_SIZES:  # every batch size once, at the same lr and momentum
        created.enqueue_trial({"batch_size": batch_size, "lr": lr, "momentum": momentum})
    process = pool.submit(
        run_cli, "search.run", "--study", str(study), "--study-name", name, "--storage", url, "--n-trials", str(len(BATCH_SIZES)),
        "--budget-examples", str(BUDGET), "--skip-speed-profile", "--quiet", cwd=folder,
    )
    return ExampleRun(study, name, url, folder, process)


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The module's three independent subprocesses, started together (each mostly keeps one core busy):
    the two examples and the bad studies."""
    with ThreadPoolExecutor(3) as pool:
        yield {
            "tabular": start_example(pool, TABULAR, tmp_path_factory.mktemp("tabular"), lr=0.003, momentum=0.9),
            "regression": start_example(pool, REGRESSION, tmp_path_factory.mktemp("regression"), lr=0.02, momentum=0.9),
            "bad": start_bad_studies(pool, tmp_path_factory),
        }


@pytest.fixture(scope="module")
def tabular(started: dict[str, Any]) -> ExampleRun:
    return started["tabular"]


@pytest.fixture(scope="module")
def regression(started: dict[str, Any]) -> ExampleRun:
    return started["regression"]


def assert_one_paragraph(stderr: str) -> None:
    """`error: ...` wrapped with indented continuation lines: nothing else (no traceback, no warnings)."""
    lines = stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), stderr
    assert all(line.startswith("  ") for line in lines[1:]), stderr
    assert "Traceback" not in stderr


# --- the examples end to end -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("example", ["tabular", "regression"])
def test_example_runs_end_to_end_then_best(example: str, request: pytest.FixtureRequest) -> None:
    run: ExampleRun = request.getfixturevalue(example)
    assert run.result.returncode == 0, run.result.stderr
    trials = run.trials()
    assert sorted(t.params["batch_size"] for t in trials) == list(BATCH_SIZES)
    assert all(t.state in FINISHED for t in trials) and any(t.state == TrialState.COMPLETE for t in trials)

    best = run_cli("search.best", "--study", run.name, "--storage", run.url, cwd=run.folder)
    assert best.returncode == 0, best.stderr
    winner = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    ranked = [line.split() for line in best.stdout.splitlines() if line.strip().startswith("1 ")]
    assert ranked and ranked[0][1] == str(winner.number), best.stdout


@pytest.mark.slow
@pytest.mark.parametrize("example", ["tabular", "regression"])
def test_example_report(example: str, request: pytest.FixtureRequest) -> None:
    run: ExampleRun = request.getfixturevalue(example)
    if run.result.returncode:
        pytest.fail(f"search.run failed: {run.result.stderr}")  # not the expected failure
    out = run.folder / "report"
    report = run_cli("search.report", "--study", run.name, "--storage", run.url, "--out", str(out), cwd=run.folder)
    assert report.returncode == 0, report.stderr
    assert (out / "report.html").stat().st_size > 0
    assert (out / "best_per_batch_size.png").stat().st_size > 0 and (out / "loss_curves.png").stat().st_size > 0


def test_nn_module_with_datasets_and_adamw(tabular: ExampleRun) -> None:
    assert tabular.result.returncode == 0, tabular.result.stderr
    assert "cancer.splits: 341 train / 114 validation examples (in memory)" in tabular.result.stdout
    assert "optimizer adamw" in tabular.result.stdout
    for trial in tabular.trials():
        attrs = trial.user_attrs
        assert attrs["optimizer"] == "adamw"
        # lr_parameterization: {scaling: sqrt, reference_batch_size: 32}
        assert attrs["effective_lr"] == pytest.approx(trial.params["lr"] * math.sqrt(trial.params["batch_size"] / 32))
        if trial.state == TrialState.COMPLETE:
            assert 0 <= attrs["final_val_acc"] <= 1 and math.isfinite(attrs["final_val_loss"])  # cross_entropy: accuracy recorded


def test_lightning_module_with_datamodule(regression: ExampleRun) -> None:
    assert regression.result.returncode == 0, regression.result.stderr
    assert "diabetes.DiabetesData (LightningDataModule): 264 train examples" in regression.result.stdout
    for trial in regression.trials():
        attrs = trial.user_attrs
        assert attrs["optimizer"] == "sgd" and attrs["effective_lr"] == pytest.approx(trial.params["lr"])
        assert "final_val_acc" not in attrs  # the module logs val_loss only
        if trial.state == TrialState.COMPLETE:
            assert math.isfinite(attrs["final_val_loss"]) and attrs["final_val_loss"] == trial.value
    complete = [t for t in regression.trials() if t.state == TrialState.COMPLETE]
    assert min(t.value for t in complete) < 1.0  # standardized target: below 1 is better than predicting the mean


@pytest.mark.parametrize("example", ["tabular", "regression"])
def test_exact_budgets_and_equal_examples_checkpoints(example: str, request: pytest.FixtureRequest) -> None:
    run: ExampleRun = request.getfixturevalue(example)
    assert run.result.returncode == 0, run.result.stderr
    study = optuna.load_study(study_name=run.name, storage=run.url)
    every = study.user_attrs["report_every_examples"]
    assert every == 128 and study.user_attrs["budget_examples"] == BUDGET
    checkpoints = list(range(every, BUDGET + 1, every))
    for trial in study.trials:
        batch_size, attrs = trial.params["batch_size"], trial.user_attrs
        steps = sorted(trial.intermediate_values)
        assert attrs["steps"] == BUDGET // batch_size and attrs["budget_examples"] == BUDGET
        assert all(step % every == 0 for step in steps)
        if trial.state == TrialState.COMPLETE:
            # The same checkpoints (examples seen) whatever the batch size, and the whole budget trained.
            assert steps == checkpoints, (batch_size, steps)
            assert attrs["examples_seen"] == attrs["steps"] * batch_size == BUDGET
        else:
            assert trial.state == TrialState.PRUNED and steps == checkpoints[: len(steps)] and steps
            assert attrs["examples_seen"] == steps[-1] and attrs["examples_seen"] % batch_size == 0
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) >= 3  # the median pruner's start-up trials


@pytest.mark.slow
def test_evaluate_the_tabular_example_on_its_test_split(tabular: ExampleRun) -> None:
    assert tabular.result.returncode == 0, tabular.result.stderr
    # User code runs only from a study file named on the command line, never from the stored spec alone.
    by_name = run_cli("search.evaluate", "--study", tabular.name, "--storage", tabular.url, "--top", "1", "--seeds", "1", cwd=tabular.folder)
    assert by_name.returncode == 2 and "Pass the study file" in " ".join(by_name.stderr.split()), by_name.stderr
    result = run_cli(
        "search.evaluate", "--study", str(tabular.study), "--study-name", tabular.name, "--storage", tabular.url, "--top", "1", "--seeds", "1",
        cwd=tabular.folder,
    )
    assert result.returncode == 0, result.stderr
    assert "455 training examples, measured on 114 test examples" in result.stdout
    assert "test_loss" in result.stdout
    [run] = optuna.load_study(study_name=tabular.name + EVALUATION_SUFFIX, storage=tabular.url).trials
    assert run.state == TrialState.COMPLETE and run.user_attrs["optimizer"] == "adamw"
    assert math.isfinite(run.user_attrs["test_loss"]) and 0 <= run.user_attrs["test_acc"] <= 1
    assert run.user_attrs["train_images"] == 455 and run.user_attrs["test_images"] == 114


# --- in process: the optimizer, the data paths --------------------------------------------------


def test_adamw_beta1_is_the_sampled_momentum(isolated_imports: None) -> None:
    spec = load_spec(str(TABULAR))
    hp = space.sample(optuna.trial.FixedTrial({"batch_size": 16, "lr": 0.004, "momentum": 0.87}), spec)
    plan = make_plan(spec, hp, seed=0, micro_batch_size=None)
    data = load_user_data(spec, CPU, min(BATCH_SIZES))
    module = TrialModule(training_step(spec, build_model(spec, data), CPU), plan, spec.optimizer, spec.schedule)
    [optimizer], [_] = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.87, spec.optimizer.beta2) and group["betas"][0] == hp.momentum
    assert group["initial_lr"] == pytest.approx(0.004 * math.sqrt(16 / 32)) == hp.effective_lr
    assert group["weight_decay"] == 0.01 and group["eps"] == 1e-8


STREAM_DATA = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset


def indexed(n: int = 100):
    """Each example's feature and label is its index: batches show the order they were drawn in."""
    index = torch.arange(n)
    return {"train": TensorDataset(index.float().unsqueeze(1), index), "val": TensorDataset(index[:20].float().unsqueeze(1), index[:20])}


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(1, 100)

    def forward(self, x):
        return self.net(x / 100)
'''


def test_streamed_datasets_serve_exact_batches_in_a_seeded_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_imports: None,
) -> None:
    (tmp_path / "streamdata.py").write_text(STREAM_DATA)
    spec = validate_spec({
        "name": "streamed", "code_dir": str(tmp_path), "model": {"class_path": "streamdata.Linear"},
        "data": {"class_path": "streamdata.indexed"}, "budget_examples": 256, "diagnostics": {"enabled": False},
        "search_space": {"batch_size": [16, 32], "lr": {"low": 0.01, "high": 0.1}, "momentum": {"low": 0.5, "high": 0.9}},
        "pruner": {"name": "none", "report_every_examples": 64},
    })
    monkeypatch.setattr(user, "IN_MEMORY_BYTES", 0)
    data = load_user_data(spec, CPU, 16)
    assert isinstance(data, DatasetData) and isinstance(data.train, user._Streamed) and "streamed" in data.describe()

    def draw(seed: int, count: int = 14) -> list[torch.Tensor]:
        batches = list(itertools.islice(data.train_batches(16, seed), count))
        assert all(torch.equal(x[:, 0], y.float()) for x, y in batches)  # features stay with their labels
        return [y for _, y in batches]

    labels = draw(seed=3)
    assert all(len(y) == 16 for y in labels)  # never a short batch
    per_epoch = 100 // 16  # 6 full batches; the 4 left over are dropped
    epochs = [torch.cat(labels[e * per_epoch:(e + 1) * per_epoch]) for e in range(2)]
    assert all(len(set(epoch.tolist())) == per_epoch * 16 for epoch in epochs)  # each example at most once an epoch
    assert not torch.equal(epochs[0], epochs[1])  # the next epoch is reshuffled: 14 batches wrapped past 2 epochs
    assert all(torch.equal(a, b) for a, b in zip(labels, draw(seed=3)))  # the same seed, the same order
    assert not all(torch.equal(a, b) for a, b in zip(labels, draw(seed=4)))

    # A whole trial on the streamed path: exact steps, validation at the shared checkpoints.
    hp = space.sample(optuna.trial.FixedTrial({"batch_size": 32, "lr": 0.05, "momentum": 0.9}), spec)
    plan = make_plan(spec, hp, seed=0, micro_batch_size=None)
    reporter = ExamplesSeenReporter(optuna.create_study().ask())  # records the checkpoints, as in a trial
    log, steps, _ = train(training_step(spec, build_model(spec, data), CPU), data, plan, spec.optimizer, spec.schedule, [reporter])
    assert steps == 256 // 32 and [c.examples_seen for c in log.checkpoints] == [64, 128, 192, 256]
    assert all(math.isfinite(c.val_loss) and c.val_acc is not None for c in log.checkpoints)


@pytest.mark.slow
def test_datamodule_batches_are_exact_and_seeded(isolated_imports: None) -> None:
    spec = load_spec(str(REGRESSION))
    data = load_user_data(spec, CPU, min(BATCH_SIZES))
    assert isinstance(data, DataModuleData)
    rows = {tuple(row) for row in data.module.splits["train"].tensors[0].tolist()}

    def draw(batch_size: int, seed: int) -> list[torch.Tensor]:
        return [x for x, _ in itertools.islice(data.train_batches(batch_size, seed), 10)]

    batches = draw(64, seed=1)  # 264 examples: 4 batches of 64 an epoch, the short one (8) dropped
    assert data.module.batch_size == 64 and all(len(x) == 64 for x in batches)
    first_epoch = {tuple(row) for row in torch.cat(batches[:4]).tolist()}
    assert len(first_epoch) == 4 * 64 and first_epoch <= rows  # 256 different training examples
    assert all(torch.equal(a, b) for a, b in zip(batches, draw(64, seed=1)))
    assert not torch.equal(torch.cat(batches), torch.cat(draw(64, seed=2)))
    assert all(len(y) == 8 for y in draw(8, seed=1)) and data.module.batch_size == 8


# --- the user's mistakes: exit 2, one paragraph, nothing stored ----------------------------------

BAD_CODE = '''
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def regression(n: int = 200):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    return {"train": TensorDataset(x[:150], x[:150].sum(1)), "val": TensorDataset(x[150:], x[150:].sum(1))}


def classes(n: int = 200):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    return {"train": TensorDataset(x[:150], y[:150]), "val": TensorDataset(x[150:], y[150:])}


class Wide(nn.Module):
    def __init__(self, outputs: int = 1) -> None:
        super().__init__()
        self.net = nn.Linear(4, outputs)

    def forward(self, x):
        return self.net(x)


class FixedBatch(pl.LightningDataModule):
    """Hard-codes its training batch size: the search cannot set it."""

    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.size = size
        self.batch_size = 1

    def setup(self, stage=None):
        self.sets = regression()

    def train_dataloader(self):
        return DataLoader(self.sets["train"], batch_size=self.size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.sets["val"], batch_size=64)


class Silent(pl.LightningModule):
    """Logs its validation loss under another name."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x).squeeze(1), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("valid_loss", F.mse_loss(self.net(x).squeeze(1), y))
'''

BAD_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "missing_module": ({"model": {"class_path": "no_such_module.Wide"}}, "The model `no_such_module.Wide` could not be imported"),
    "missing_attribute": ({"model": {"class_path": "badcode.NoSuchModel"}}, "module badcode has no `NoSuchModel`"),
    "bad_init_args": ({"model": {"class_path": "badcode.Wide", "init_args": {"outputz": 1}}}, "does not accept init_args ['outputz']"),
    "bad_data_init_args": ({"data": {"class_path": "badcode.regression", "init_args": {"rows": 5}}}, "The data `badcode.regression` does not accept"),
    "cross_entropy_one_output": (
        {"data": {"class_path": "badcode.classes"}, "loss": "cross_entropy"}, "cross_entropy needs one score per class",
    ),
    "mse_two_outputs": ({"model": {"class_path": "badcode.Wide", "init_args": {"outputs": 2}}}, "outputs have shape (2, 2) but the targets (2,)"),
    # Its hard-coded size is the study's smallest: the largest batch size gives it away.
    "datamodule_ignores_batch_size": ({"data": {"class_path": "badcode.FixedBatch"}}, "ignores the batch size the service sets"),
    "no_val_loss": ({"model": {"class_path": "badcode.Silent"}}, "validation_step logged no 'val_loss' (logged: valid_loss)"),
}


@dataclass
class BadRun:
    code: int
    stderr: str
    folder: Path


def run_bad_studies(folders: list[str]) -> None:
    """`python -m tests.test_user_code FOLDER...`: search.run's `main` (what `python -m search.run` exits
    with) on each folder's study.yaml, in one interpreter, so that torch and Lightning are imported once.
    Each run gets file descriptors 1 and 2 of its own (whatever writes there: print, warnings, logging
    handlers, C code); an exception escaping `main` ends this process with its traceback. Prints
    {folder: [exit code, stderr]} as JSON."""
    from search.run import main

    results = {}
    for folder in folders:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            saved = os.dup(1), os.dup(2)
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
            try:
                code = main(["--study", f"{folder}/study.yaml", "--storage", f"sqlite:///{folder}/study.sqlite3", "--skip-speed-profile", "--quiet"])
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            err.seek(0)
            results[folder] = [code, err.read()]
    print(json.dumps(results))


def start_bad_studies(pool: ThreadPoolExecutor, tmp_path_factory: pytest.TempPathFactory) -> Future[dict[str, BadRun]]:
    """Every bad case, each in its own folder (study.yaml next to badcode.py) with its own SQLite file."""
    base = {
        "model": {"class_path": "badcode.Wide"}, "data": {"class_path": "badcode.regression"}, "loss": "mse",
        "budget_examples": 512, "n_trials": 2,
        "search_space": {"batch_size": list(BATCH_SIZES), "lr": {"low": 0.001, "high": 0.01}, "momentum": {"low": 0.5, "high": 0.9}},
    }
    folders = {}
    for case, (changes, _) in BAD_CASES.items():
        folder = folders[case] = tmp_path_factory.mktemp(case)
        (folder / "badcode.py").write_text(BAD_CODE)
        (folder / "study.yaml").write_text(yaml.safe_dump({**base, **changes, "name": case}))

    def run() -> dict[str, BadRun]:
        # From the repository (for `tests`): badcode resolves from each study file's folder.
        driver = run_cli("tests.test_user_code", *map(str, folders.values()), cwd=REPO)
        assert driver.returncode == 0 and driver.stdout.strip(), driver.stdout + driver.stderr
        results = json.loads(driver.stdout.strip().splitlines()[-1])
        return {case: BadRun(*results[str(folder)], folder) for case, folder in folders.items()}

    return pool.submit(run)


@pytest.fixture(scope="module")
def bad_runs(started: dict[str, Any]) -> dict[str, BadRun]:
    return started["bad"].result()


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_user_code_exits_2_with_one_paragraph(case: str, bad_runs: dict[str, BadRun]) -> None:
    run = bad_runs[case]
    assert run.code == 2, run.stderr
    assert_one_paragraph(run.stderr)
    assert BAD_CASES[case][1] in " ".join(run.stderr.split()), run.stderr
    assert not (run.folder / "study.sqlite3").exists()  # found before the study exists


# --- several workers and resume on PostgreSQL ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_then_resume_with_user_code_on_postgres(tmp_path: Path, postgres_url: str, drop_studies) -> None:  # type: ignore[no-untyped-def]
    name = f"user_code_{uuid.uuid4().hex[:10]}"
    drop_studies(postgres_url, name)
    common = ["--study", str(REGRESSION), "--study-name", name, "--storage", postgres_url, "--workers", "2",
              "--budget-examples", str(BUDGET), "--skip-speed-profile", "--quiet"]
    first = run_cli("search.run", *common, "--n-trials", "3", cwd=tmp_path)  # each worker imports diabetes.py itself
    assert first.returncode == 0, first.stderr
    trials = optuna.load_study(study_name=name, storage=postgres_url).trials
    assert sorted(t.number for t in trials) == [0, 1, 2] and all(t.state in FINISHED for t in trials)
    earlier = {t.number: (t.params, t.datetime_start) for t in trials}

    again = run_cli("search.run", *common, "--n-trials", "5", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    trials = optuna.load_study(study_name=name, storage=postgres_url).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]  # the study-wide total, exactly
    assert all(t.state in FINISHED for t in trials)
    assert {t.number: (t.params, t.datetime_start) for t in trials if t.number < 3} == earlier  # resumed, not redone
    assert all(t.user_attrs["optimizer"] == "sgd" and t.user_attrs["examples_seen"] > 0 for t in trials)
    # Nothing of the study lies locally (no SQLite file, no weights: PostgreSQL keeps no weights without
    # checkpoints.dir); only the training curves of this machine's trials, in the default csv logger's folder.
    assert {p.relative_to(tmp_path / "results").parts[:2] for p in (tmp_path / "results").rglob("*") if p.is_file()} == {(name, "logs")}


if __name__ == "__main__":
    run_bad_studies(sys.argv[1:])
