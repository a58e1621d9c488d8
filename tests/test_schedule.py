"""Batch-size schedules: decay_lr (constant batch, decaying learning rate) against grow_batch."""
from __future__ import annotations

import lightning.pytorch as pl
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import create_trial

from search.analysis.schedules import schedule_comparison, schedule_sentence
from search.config.load import validate_spec
from search.config.spec import ScheduleSpec
from search.data.batches import device_data
from search.data.images import load_dataset
from search.errors import UserError
from search.render.console import trial_line
from search.render.page import _schedule_section
from search.study.objective import Objective
from search.study.space import build_sampler, sample
from search.train.plan import batch_growth, growth_steps
from tests.conftest import SMALL_STUDY, merge


def _spec(**changes):  # type: ignore[no-untyped-def]
    return validate_spec(merge({"name": "t", **SMALL_STUDY}, changes))


def test_growth_points_follow_the_decay_they_replace() -> None:
    """Linear decay without warm-up halves the rate at 1/2 of the budget, quarters it at 3/4, eighths it at 7/8."""
    schedule = ScheduleSpec(warmup_fraction=0.0, warmup_min_steps=0, decay="linear", growth_factor=2, max_growths=3)
    assert batch_growth(16, 1024, 128, schedule) == ((512, 2), (768, 4), (896, 8))
    # Growth stops where the grown batch would no longer divide the report interval (32 x 8 > 128).
    assert batch_growth(32, 1024, 128, schedule) == ((512, 2), (768, 4))
    assert growth_steps(32, 1024, ((512, 2), (768, 4))) == 16 + 4 + 2
    assert growth_steps(32, 1000, ()) == 1000 // 32


class _StepSizes(pl.Callback):
    """The examples and the learning rate of every optimizer step, read between loader batches."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.learning_rates: set[float] = set()
        self._examples = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.learning_rates.add(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self._examples += len(batch[1])
        if trainer.global_step > len(self.sizes):
            self.sizes.append(self._examples)
            self._examples = 0


def test_grow_batch_trains_the_whole_budget_with_growing_batches() -> None:
    spec = _spec(
        budget_examples=1024, search_space={"schedule": ["grow_batch"]}, pruner={"name": "none", "report_every_examples": 128},
        schedule={"warmup_fraction": 0.0, "warmup_min_steps": 0, "decay": "linear", "growth_factor": 2, "max_growths": 3},
    )
    images = load_dataset(spec.dataset)
    steps = _StepSizes()
    objective = Objective(spec, device_data(spec, images, torch.device("cpu")), "cpu", callbacks=[steps])
    study = optuna.create_study(sampler=build_sampler(spec))
    study.enqueue_trial({"batch_size": 16, "lr": 0.1, "momentum": 0.9})
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial_line(trial)
    assert "schedule" not in trial.params and trial.user_attrs["schedule"] == "grow_batch"
    assert steps.sizes == [16] * 32 + [32] * 8 + [64] * 2 + [128]
    assert sorted(steps.learning_rates) == pytest.approx([0.1])  # no warm-up here, and no decay: a fixed rate
    assert trial.user_attrs["steps"] == len(steps.sizes) and trial.user_attrs["examples_seen"] == 1024
    assert sorted(trial.intermediate_values) == list(range(128, 1025, 128))


def test_the_schedule_is_sampled_only_when_both_are_listed() -> None:
    both = _spec(search_space={"schedule": ["decay_lr", "grow_batch"]}, sampler={"name": "random"})
    study = optuna.create_study(sampler=build_sampler(both))
    drawn = {sample(study.ask(), both).schedule for _ in range(12)}
    assert drawn == {"decay_lr", "grow_batch"}
    assert all("schedule" in trial.params for trial in study.trials)
    one = _spec()
    trial = optuna.create_study(sampler=build_sampler(one)).ask()
    assert sample(trial, one).schedule == "decay_lr" and "schedule" not in trial.params


def test_grow_batch_needs_a_decay_to_follow() -> None:
    with pytest.raises(UserError, match="schedule.decay"):
        _spec(search_space={"schedule": ["grow_batch"]}, schedule={"decay": "constant"})


def test_the_report_compares_the_schedules_per_starting_batch_size() -> None:
    distributions = {"batch_size": CategoricalDistribution([32, 64, 128]), "schedule": CategoricalDistribution(["decay_lr", "grow_batch"])}
    losses = {(32, "decay_lr"): [1.0, 1.2], (32, "grow_batch"): [0.9], (64, "decay_lr"): [1.1], (64, "grow_batch"): [1.3], (128, "decay_lr"): [1.5]}
    trials = [
        create_trial(params={"batch_size": size, "schedule": schedule}, distributions=distributions, value=loss)
        for (size, schedule), values in losses.items() for loss in values
    ]
    rows = schedule_comparison(trials)
    assert [(r.batch_size, r.best_loss["decay_lr"], r.best_loss["grow_batch"]) for r in rows] == [(32, 1.0, 0.9), (64, 1.1, 1.3), (128, 1.5, None)]
    assert rows[0].completed == {"decay_lr": 2, "grow_batch": 1}
    sentence = schedule_sentence(rows)
    assert sentence is not None and "at 1 of the 2 starting batch sizes where both completed (32)" in sentence
    assert "0.9000 (1/1)" in _schedule_section(rows)
    assert schedule_comparison([t for t in trials if t.params["schedule"] == "decay_lr"]) == []
