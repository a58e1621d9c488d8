"""The study definition: validation, the fixed-budget arithmetic, learning-rate parameterizations."""
from __future__ import annotations

import math

import pytest

from search.config.load import load_spec, validate_spec
from search.config.spec import LRParameterizationSpec
from search.errors import UserError
from tests.conftest import SMALL_STUDY, merge


def spec_with(**changes):  # type: ignore[no-untyped-def]
    return validate_spec(merge({"name": "t", **SMALL_STUDY}, changes))


@pytest.mark.parametrize("name", ["smoke", "cifar_bs"])
def test_shipped_studies_validate(name: str) -> None:
    spec = load_spec(name)
    assert spec.name == name
    for batch_size in spec.search_space.batch_sizes():
        assert spec.steps(batch_size) >= spec.min_steps
        assert spec.report_every() % batch_size == 0


def test_cifar_bs_is_the_real_study() -> None:
    spec = load_spec("cifar_bs")
    assert spec.dataset.name == "cifar10"
    assert spec.search_space.batch_sizes() == [16, 32, 64, 128, 256, 512, 1024, 2048]
    assert spec.budget_examples >= 3 * 45_000


def test_overrides_apply_and_revalidate() -> None:
    spec = load_spec("cifar_bs", {"budget_examples": 20000, "n_trials": 4, "dataset.path": "/x", "sampler.seed": 7})
    assert (spec.budget_examples, spec.n_trials, spec.dataset.path, spec.sampler.seed) == (20000, 4, "/x", 7)
    with pytest.raises(UserError, match="fewer than min_steps"):
        load_spec("cifar_bs", {"budget_examples": 4096})


def test_budget_too_small_for_the_largest_batch_is_rejected() -> None:
    with pytest.raises(UserError, match=r"batch sizes \[64\].*at least 256"):
        spec_with(budget_examples=255)


def test_report_interval_must_be_shared_by_every_batch_size() -> None:
    with pytest.raises(UserError, match="not a multiple of batch sizes"):
        spec_with(pruner={"report_every_examples": 96})


def test_default_report_interval_is_a_common_multiple() -> None:
    spec = spec_with(search_space={"batch_size": [24, 40]}, budget_examples=4800, pruner={"report_every_examples": None})
    assert spec.checkpoint_granularity() == 120
    assert spec.report_every() % 120 == 0
    assert 1 <= spec.budget_examples // spec.report_every() <= 10


def test_power_of_two_range() -> None:
    spec = spec_with(search_space={"batch_size": {"min": 8, "max": 64}})
    assert spec.search_space.batch_sizes() == [8, 16, 32, 64]
    with pytest.raises(UserError, match="not a power of two"):
        spec_with(search_space={"batch_size": {"min": 12, "max": 64}})
    with pytest.raises(UserError, match="inverted"):
        spec_with(search_space={"batch_size": {"min": 64, "max": 8}})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"search_space": {"lr": {"low": 0.5, "high": 0.1}}}, "inverted"),
        ({"search_space": {"momentum": {"low": 0.5, "high": 1.0}}}, "momentum"),
        ({"budget_examples": "lots"}, "budget_examples"),
        ({"pruner": {"name": "bogus"}}, "pruner.name"),
        ({"sampler": {"name": "bogus"}}, "sampler.name"),
        ({"dataset": {"name": "imagenet"}}, "dataset.name"),
        ({"extra_key": 1}, "extra_key"),
        ({"n_trials": None, "timeout_seconds": None}, "never ends"),
    ],
)
def test_bad_fields_are_named(changes: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        spec_with(**changes)


def test_effective_learning_rate() -> None:
    none = LRParameterizationSpec()
    linear = LRParameterizationSpec(scaling="linear", reference_batch_size=256)
    sqrt_decoupled = LRParameterizationSpec(scaling="sqrt", reference_batch_size=256, momentum_decoupled=True)
    assert none.effective_lr(0.1, 1024, 0.9) == pytest.approx(0.1)
    assert linear.effective_lr(0.1, 1024, 0.9) == pytest.approx(0.4)
    assert sqrt_decoupled.effective_lr(0.1, 1024, 0.9) == pytest.approx(0.1 * 2 * 0.1)
    assert "sqrt(B / 256)" in sqrt_decoupled.describe() and "(1 - momentum)" in sqrt_decoupled.describe()
    assert math.isclose(sqrt_decoupled.effective_lr(0.3, 256, 0.0), 0.3)
