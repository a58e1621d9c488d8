"""Training under the fixed budget: steps, examples seen and validation checkpoints per batch size."""
from __future__ import annotations

import optuna
import pytest
import torch

from search.config.load import validate_spec
from search.config.spec import ScheduleSpec
from search.data.batches import device_data
from search.data.images import load_dataset
from search.render.console import trial_line
from search.study.objective import Objective
from search.study.space import build_sampler
from search.train.plan import lr_factor
from tests.conftest import SMALL_STUDY, build_model, merge


def _spec(**changes):  # type: ignore[no-untyped-def]
    return validate_spec(merge({"name": "t", **SMALL_STUDY}, changes))


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_schedule_warms_up_and_ends_at_zero(decay: str) -> None:
    schedule = ScheduleSpec(warmup_fraction=0.1, decay=decay)
    factors = [lr_factor(step, 100, 32, schedule) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert lr_factor(100, 100, 32, schedule) == pytest.approx(0.0, abs=1e-12)


def test_every_batch_size_trains_budget_over_batch_size_steps() -> None:
    """One trial per batch size (enqueued), in-process on a real in-memory study."""
    spec = _spec(budget_examples=520, search_space={"batch_size": [16, 32, 64]}, pruner={"name": "none", "report_every_examples": 128})
    images = load_dataset(spec.dataset)
    study = optuna.create_study(sampler=build_sampler(spec))
    for batch_size in (16, 32, 64):
        study.enqueue_trial({"batch_size": batch_size, "lr": 0.1, "momentum": 0.9})
    objective = Objective(spec, device_data(spec, images, torch.device("cpu")), "cpu")
    study.optimize(objective, n_trials=3)
    for trial in study.trials:
        batch_size = trial.params["batch_size"]
        assert trial.state == optuna.trial.TrialState.COMPLETE, trial_line(trial)
        assert trial.user_attrs["steps"] == 520 // batch_size
        assert trial.user_attrs["examples_seen"] == (520 // batch_size) * batch_size
        assert trial.user_attrs["budget_examples"] == 520
        # Reports fall on the shared checkpoints, whatever the batch size.
        assert sorted(trial.intermediate_values) == [128, 256, 384, 512]
        assert trial.value == pytest.approx(trial.user_attrs["final_val_loss"])
        for key in ("final_val_acc", "best_val_loss", "best_val_acc", "train_loss", "wall_seconds", "examples_per_second", "device", "effective_lr"):
            assert key in trial.user_attrs


def test_a_diverging_trial_is_pruned_with_its_reason_and_the_study_goes_on() -> None:
    spec = _spec(pruner={"name": "none"}, search_space={"lr": {"low": 0.01, "high": 1e6, "log": True}})
    images = load_dataset(spec.dataset)
    study = optuna.create_study(sampler=build_sampler(spec))
    study.enqueue_trial({"batch_size": 16, "lr": 0.5, "momentum": 0.9})
    study.enqueue_trial({"batch_size": 16, "lr": 1e6, "momentum": 0.9})
    objective = Objective(spec, device_data(spec, images, torch.device("cpu")), "cpu")
    study.optimize(objective, n_trials=2)
    good, diverged = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert diverged.state == optuna.trial.TrialState.PRUNED
    assert diverged.user_attrs["reason"] == "diverged"


def test_models_fit_any_image_size_and_class_count() -> None:
    for name, args in (("tiny_cnn", {}), ("resnet", {"depth": 8}), ("airbench", {"widths": [8, 16, 16], "stem_width": 8})):
        for size, classes in ((32, 10), (20, 3), (64, 100)):
            model = build_model(name, classes, **args)
            assert model(torch.zeros(2, 3, size, size)).shape == (2, classes)
