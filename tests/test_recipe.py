"""The training recipe that keeps batch sizes comparable: a warm-up floor, no weight decay on
norms and biases, batch-norm statistics recalibrated before each validation."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search.config.load import load_spec, validate_spec
from search.config.spec import BatchNormSpec, OptimizerSpec, ScheduleSpec
from search.data.batches import device_data
from search.data.images import load_dataset
from search.study.reporting import ExamplesSeenReporter
from search.train.accumulation import use_ghost_batch_norm
from search.train.batch_norm import Recalibration, recalibrate, running_norms
from search.train.loss import build_loss
from search.train.model import training_step
from search.train.optim import build_optimizer
from search.train.plan import TrainingPlan, lr_factor, warmup_steps
from search.train.run import train
from search.train.step import TrainingStep
from tests.conftest import SMALL_STUDY, build_model, merge, run_cli

CPU = torch.device("cpu")
AIRBENCH = {"name": "airbench", "args": {"widths": [4, 8, 8], "stem_width": 4}}


def _spec(**changes):  # type: ignore[no-untyped-def]
    return validate_spec(merge({"name": "t", **SMALL_STUDY}, changes))


def test_warm_up_has_a_floor_of_at_most_a_quarter_of_the_steps() -> None:
    schedule = ScheduleSpec(warmup_min_steps=10)  # 5 %, at least 10 steps
    assert warmup_steps(16, 32, schedule) == 4  # the floor, capped at 16 // 4
    assert warmup_steps(225_000 // 2048, 2048, schedule) == 10  # 109 steps: 5 % would be 5
    assert warmup_steps(10_000, 32, schedule) == 500  # long trials: the fraction, as before
    assert warmup_steps(16, 32, ScheduleSpec()) == 1  # the default: no floor, 5% of the steps at every batch size
    assert warmup_steps(100, 32, ScheduleSpec(warmup_fraction=0.4, warmup_min_steps=10)) == 40  # the cap bounds the floor, not a fraction asked for


def test_warm_up_in_examples_is_the_same_share_of_the_budget_at_every_batch_size() -> None:
    budget, schedule = 16_384, ScheduleSpec(warmup_examples=819)  # 5% of the budget
    shares = {b: warmup_steps(budget // b, b, schedule) * b / budget for b in (16, 64, 256, 1024)}
    assert shares == {16: pytest.approx(0.0498, abs=1e-4), 64: pytest.approx(0.0508, abs=1e-4), 256: 0.046875, 1024: 0.0625}
    floor = {b: warmup_steps(budget // b, b, ScheduleSpec(warmup_min_steps=10)) * b / budget for b in (16, 1024)}  # a floor of 10 steps
    assert floor == {16: pytest.approx(0.0498, abs=1e-4), 1024: 0.25}  # 5% against 25%: what warmup_examples removes
    assert warmup_steps(4, 16, ScheduleSpec(warmup_examples=10_000)) == 1  # at most a quarter of the steps
    assert warmup_steps(100, 1024, ScheduleSpec(warmup_examples=1)) == 1  # at least one step


@pytest.mark.parametrize("steps", [8, 16, 40, 109, 1000])
def test_the_learning_rate_rises_over_exactly_the_warm_up_steps(steps: int) -> None:
    schedule = ScheduleSpec(warmup_min_steps=10)
    warmup = warmup_steps(steps, 64, schedule)
    assert warmup >= min(3, steps // 4)
    factors = [lr_factor(step, steps, 64, schedule) for step in range(steps)]
    assert all(a < b for a, b in zip(factors[:warmup], factors[1:warmup]))
    assert factors[warmup - 1] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[warmup - 1 :], factors[warmup:]))


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_norms_and_biases_get_no_weight_decay(name: str) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    optimizer = build_optimizer(model.parameters(), OptimizerSpec(name=name, weight_decay=0.1), lr=0.1, momentum=0.9)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and [id(p) for p in decayed["params"]] == [id(model[0].weight)]
    assert plain["weight_decay"] == 0.0 and {id(p) for p in plain["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    model(torch.randn(8, 4)).square().mean().backward()
    optimizer.step()
    (everything,) = build_optimizer(model.parameters(), OptimizerSpec(name=name, weight_decay=0.1, decay_norm_and_bias=True), 0.1, 0.9).param_groups
    assert everything["weight_decay"] == 0.1 and len(everything["params"]) == 4


def _input_norm_model() -> nn.Sequential:
    """Batch norm on the inputs first: its statistics are those of the data, computable by hand."""
    model = nn.Sequential(nn.BatchNorm1d(4, momentum=0.4), nn.Linear(4, 3))
    model[0].running_mean.fill_(5.0)  # stale statistics, as training leaves them
    return model


def _subset(examples: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(examples, 4, generator=generator) * 3 + 2, torch.randint(0, 3, (examples,), generator=generator)


def test_recalibration_recomputes_the_statistics_of_the_subset() -> None:
    model = _input_norm_model().eval()
    model[1].train()  # a module in another mode than its parent keeps it
    step = TrainingStep(model, build_loss(_spec()), CPU)
    inputs, targets = _subset()
    recalibrate(step, (inputs, targets), chunk=64)
    norm = model[0]
    torch.testing.assert_close(norm.running_mean, inputs.mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm.running_var, inputs.var(0), atol=1e-4, rtol=0)
    assert norm.momentum == 0.4 and not model.training and not norm.training and model[1].training
    # In chunks: a cumulative average of the chunks' statistics.
    recalibrate(step, (inputs, targets), chunk=16)
    chunks = inputs.split(16)
    torch.testing.assert_close(norm.running_mean, torch.stack([c.mean(0) for c in chunks]).mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm.running_var, torch.stack([c.var(0) for c in chunks]).mean(0), atol=1e-4, rtol=0)
    assert int(norm.num_batches_tracked) == 4 and norm.momentum == 0.4
    # 65 examples in chunks of at most 16: five of 13, not four of 16 and one of a single example.
    inputs, targets = _subset(65)
    recalibrate(step, (inputs, targets), chunk=16)
    chunks = inputs.split(13)
    torch.testing.assert_close(norm.running_mean, torch.stack([c.mean(0) for c in chunks]).mean(0), atol=1e-4, rtol=0)
    assert int(norm.num_batches_tracked) == 5


def test_recalibration_finds_ghost_batch_norm() -> None:
    model = use_ghost_batch_norm(_input_norm_model(), 8)
    assert running_norms(model) == [model[0].norm]
    inputs, targets = _subset()
    recalibrate(TrainingStep(model, build_loss(_spec()), CPU), (inputs, targets), chunk=32)
    groups = inputs.split(8)  # statistics over the groups that training normalizes
    torch.testing.assert_close(model[0].norm.running_mean, torch.stack([g.mean(0) for g in groups]).mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(model[0].norm.running_var, torch.stack([g.var(0) for g in groups]).mean(0), atol=1e-4, rtol=0)


def test_a_model_without_batch_norm_is_left_alone_at_no_cost() -> None:
    spec = _spec()
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 3)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recalibration = Recalibration(device_data(spec, load_dataset(spec.dataset), CPU), spec.batch_norm)
    recalibration(TrainingStep(model, build_loss(spec), CPU))
    assert recalibration._subset is None  # no subset drawn, no forward pass
    assert not model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_recalibration_is_off_at_zero_examples() -> None:
    spec = _spec()
    model = _input_norm_model()
    recalibration = Recalibration(device_data(spec, load_dataset(spec.dataset), CPU), BatchNormSpec(recalibrate_examples=0))
    recalibration(TrainingStep(model, build_loss(spec), CPU))
    assert torch.all(model[0].running_mean == 5.0)


class _DictBatchModule(pl.LightningModule):
    """A LightningModule whose forward does not take the inputs: only its training_step makes a valid pass."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 3)
        self.logged: list[str] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.norm(batch["x"]))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch), batch["y"])
        self.log("train_loss", loss)
        return loss

    def log(self, name: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.logged.append(name)


def test_a_lightning_module_recalibrates_through_its_training_step_without_logging() -> None:
    model = _DictBatchModule().eval()
    inputs, targets = _subset()
    recalibrate(TrainingStep(model, None, CPU), {"x": inputs, "y": targets}, chunk=64)
    torch.testing.assert_close(model.norm.running_mean, inputs.mean(0), atol=1e-4, rtol=0)
    assert model.logged == [] and "log" not in vars(model) and not model.training


class _RecalibrationWitness(pl.Callback):
    """At each validation, the first batch norm's `num_batches_tracked`: the recalibration's chunks, not the steps trained."""

    def __init__(self) -> None:
        self.tracked: list[int] = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # type: ignore[no-untyped-def]
        if batch_idx == 0:
            self.tracked.append(int(running_norms(pl_module)[0].num_batches_tracked))


def test_a_trial_recalibrates_before_every_validation_the_final_one_included() -> None:
    spec = _spec(model=AIRBENCH)
    data = device_data(spec, load_dataset(spec.dataset), CPU)
    torch.manual_seed(0)
    model = build_model("airbench", 3, **AIRBENCH["args"])
    step = training_step(spec, model, CPU)
    recalibration = Recalibration(data, BatchNormSpec(recalibrate_examples=96, recalibrate_batch=32))
    witness = _RecalibrationWitness()
    # 5 steps of 32, validation every 128 examples: once after step 4, once more at the end (fit.py's extra validate).
    plan = TrainingPlan(32, 5, 0.2, 0.9, report_every_examples=128, seed=1)
    _, steps, _ = train(step, data, plan, spec.optimizer, spec.schedule, [witness], None, recalibration)
    assert steps == 5 and witness.tracked == [3, 3]
    trained = {name: buffer.clone() for name, buffer in model.named_buffers()}
    recalibrate(step, data.fixed_subset(96, seed=0), chunk=32)  # the final weights, recalibrated by hand
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(buffer, trained[name], msg=name)
    assert all(norm.momentum == 0.4 for norm in running_norms(model))


class _TupleBatchModule(pl.LightningModule):
    """A user's LightningModule with batch norm whose forward takes the whole (images, labels) batch."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.net(batch[0])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch), batch[1])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", F.cross_entropy(self(batch), batch[1]))


def test_a_lightning_module_trial_recalibrates_before_every_validation() -> None:
    spec = _spec()
    data = device_data(spec, load_dataset(spec.dataset), CPU)
    torch.manual_seed(0)
    model = _TupleBatchModule()
    witness = _RecalibrationWitness()
    recalibration = Recalibration(data, BatchNormSpec(recalibrate_examples=96, recalibrate_batch=32))
    reporter = ExamplesSeenReporter(optuna.create_study().ask())
    plan = TrainingPlan(32, 5, 0.2, 0.9, report_every_examples=128, seed=1)
    log, steps, _ = train(TrainingStep(model, None, CPU), data, plan, spec.optimizer, spec.schedule, [reporter, witness], None, recalibration)
    assert steps == 5 and witness.tracked == [3, 3]
    assert [c.examples_seen for c in log.checkpoints] == [128, 160] and all(c.val_loss > 0 for c in log.checkpoints)


@pytest.mark.slow
def test_search_run_stores_each_trials_warm_up(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file({"model": AIRBENCH, "n_trials": 2, "pruner": {"name": "none", "args": {}}})
    result = run_cli("search.run", "--study", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    spec = load_spec(path)
    study = optuna.load_study(study_name=path.stem, storage=f"sqlite:///{tmp_path / 'results' / f'{path.stem}.sqlite3'}")
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        steps = trial.user_attrs["steps"]
        assert steps == 512 // trial.params["batch_size"]
        assert trial.user_attrs["warmup_steps"] == warmup_steps(steps, trial.params["batch_size"], spec.schedule) == round(0.05 * steps)  # no floor by default
