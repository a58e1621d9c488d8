"""Gradient accumulation: micro-batched steps equal full-batch steps, ghost batch norm, the memory cap."""
from __future__ import annotations

import json

import optuna
import pytest
import torch
from torch import nn

from search.config.load import validate_spec
from search.data.batches import device_data
from search.data.images import cache_dir, load_dataset
from search.render.console import trial_line
from search.study.objective import Objective
from search.study.space import build_sampler
from search.train.accumulation import (
    BatchSplitter,
    GhostBatchNorm,
    _estimated_bytes,
    use_ghost_batch_norm,
)
from search.train.model import training_step
from search.train.plan import TrainingPlan
from search.train.run import train
from tests.conftest import SMALL_STUDY, build_model, merge


def _spec(**changes):  # type: ignore[no-untyped-def]
    return validate_spec(merge({"name": "t", **SMALL_STUDY}, changes))


def _trained(spec, data, model_name: str, args: dict, micro: int | None, steps: int = 2) -> nn.Module:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_model(model_name, 3, 3, **args)
    plan = TrainingPlan(64, steps, 0.2, 0.9, report_every_examples=64 * steps, seed=1, micro_batch_size=micro)
    train(training_step(spec, model, data.device), data, plan, spec.optimizer, spec.schedule, [])
    return model


@pytest.mark.parametrize("micro", [16, 24])  # 24: the last micro-batch of 64 holds 16, weighted by its size
def test_accumulated_steps_equal_full_batch_steps_without_batch_norm(micro: int) -> None:
    """Two SGD steps with momentum and weight decay: the second step uses the first's momentum."""
    spec = _spec()
    data = device_data(spec, load_dataset(spec.dataset), torch.device("cpu"))
    full = _trained(spec, data, "tiny_cnn", {"width": 4}, None)
    accumulated = _trained(spec, data, "tiny_cnn", {"width": 4}, micro)
    untrained = build_model("tiny_cnn", 3, 3, width=4)
    for (name, expected), actual, initial in zip(full.named_parameters(), accumulated.parameters(), untrained.parameters()):
        assert not torch.equal(expected, initial), f"{name} did not train"
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_ghost_batch_norm_does_not_depend_on_how_the_batch_is_split() -> None:
    """Ghost batch norm over 16 examples: one pass of 64 equals four micro-batches of 16, running stats included."""
    spec = _spec()
    data = device_data(spec, load_dataset(spec.dataset), torch.device("cpu"))
    airbench = {"widths": [8, 8, 8], "stem_width": 4}

    def trained(micro: int | None) -> nn.Module:
        torch.manual_seed(0)
        model = use_ghost_batch_norm(build_model("airbench", 3, 3, **airbench), 16)
        train(training_step(spec, model, data.device), data, TrainingPlan(64, 2, 0.2, 0.9, 128, 1, micro), spec.optimizer, spec.schedule, [])
        return model

    one_pass, micro_batched = trained(None), trained(16)
    assert sum(isinstance(m, GhostBatchNorm) for m in one_pass.modules()) == 6
    for (name, expected), actual in zip(one_pass.state_dict().items(), micro_batched.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5, msg=name)


def test_a_batch_above_the_memory_cap_trains_through_accumulation() -> None:
    """A cap that fits 16 examples of the model: the batch of 64 is split, trains the whole budget, and the size is cached."""
    probe = _spec()
    data = device_data(probe, load_dataset(probe.dataset), torch.device("cpu"))
    step = training_step(probe, build_model("tiny_cnn", 3, 3, width=4), data.device)
    fixed, per_example = _estimated_bytes(step, data.fixed_subset(1, seed=0))
    cap_mb = (fixed + per_example * 20) / 2**20  # 16 fits, 32 does not
    spec = _spec(accumulation={"memory_cap_mb": cap_mb}, pruner={"name": "none", "report_every_examples": 128})
    objective = Objective(spec, data, "cpu")
    assert objective.splitter.largest_fitting == 16
    cached = json.loads((cache_dir() / "micro_batch.json").read_text())
    assert 16 in cached.values()
    assert BatchSplitter.for_study(spec, data, "cpu") == objective.splitter
    study = optuna.create_study(sampler=build_sampler(spec))
    study.enqueue_trial({"batch_size": 64, "lr": 0.1, "momentum": 0.9})
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial_line(trial)
    assert trial.user_attrs["micro_batch_size"] == 16
    assert trial.user_attrs["examples_seen"] == 512 and trial.user_attrs["steps"] == 8
    assert sorted(trial.intermediate_values) == [128, 256, 384, 512]


def test_micro_batch_choice() -> None:
    """Full normalization never splits a batch-norm model; ghost normalization splits in whole groups."""
    assert BatchSplitter(64, False, "full").micro_batch_size(256) == 64
    assert BatchSplitter(64, False, "full").micro_batch_size(256, fastest=32) == 32
    assert BatchSplitter(512, False, "full").micro_batch_size(256) is None
    assert BatchSplitter(64, True, "full").micro_batch_size(256) is None
    assert BatchSplitter(100, True, 32).micro_batch_size(256) == 96
    assert BatchSplitter(16, True, 32).micro_batch_size(256) == 32


def test_batch_norm_group_reaches_the_splitter_and_the_key_and_its_old_place_says_where_it_moved() -> None:
    from search.errors import UserError

    spec = _spec(model={"name": "airbench", "args": {"widths": [4, 8, 8], "stem_width": 4}}, batch_norm={"group": 16})
    data = device_data(spec, load_dataset(spec.dataset), torch.device("cpu"))
    splitter = BatchSplitter.for_study(spec, data, "cpu")
    assert splitter.batch_norm and splitter.normalization_batch == 16
    prepared = splitter.prepare(build_model("airbench", 3, 3, widths=[4, 8, 8], stem_width=4))
    assert any(isinstance(m, GhostBatchNorm) for m in prepared.modules())
    assert splitter.micro_batch_size(64, fastest=24) == 16  # split in whole groups
    key = spec.comparability_key()
    assert key["normalization_batch"] == 16 and "group" not in key["batch_norm"]  # the name keys stored before the move use
    assert "warmup_examples" not in key["schedule"]  # unset: as in keys stored before it existed
    assert _spec(schedule={"warmup_examples": 100}).comparability_key()["schedule"]["warmup_examples"] == 100
    with pytest.raises(UserError, match="batch_norm.group"):
        _spec(accumulation={"normalization_batch": 32})
