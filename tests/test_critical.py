"""The critical batch size: inverting a planted frontier through its data-efficiency curve, and predicting it from B_simple."""
from __future__ import annotations

import math
import random

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, create_trial

from search.analysis.critical import (
    Curve,
    critical_batch,
    doubling_cost,
    fit_b_crit,
    invert,
    monotone,
)
from search.analysis.frontier import seed_losses
from search.record import ProbeResult

BUDGET, SMALL, SIZES = 16384, 16, [16, 32, 64, 128, 256, 512, 1024]
DISTRIBUTIONS = {"batch_size": CategoricalDistribution(SIZES), "lr": FloatDistribution(1e-3, 1.0, log=True), "momentum": FloatDistribution(0, 0.99)}


def small_loss(examples: float, seed: int) -> float:
    """The smallest batch size's loss after `examples`: linear in log-examples, so the curve's interpolation is exact."""
    return 3.0 - 0.25 * math.log(examples) + 0.01 * seed


def _trial(batch_size: int, role: str, seed: int, value: float, budget: int = BUDGET) -> FrozenTrial:
    return create_trial(
        params={"batch_size": batch_size, "lr": 0.1, "momentum": 0.9}, distributions=DISTRIBUTIONS, value=value,
        user_attrs={"frontier_role": role, "frontier_index": seed, "budget_examples": budget, "final_val_loss": value},
    )


def planted_study(b_crit: float, noise: float = 0.0, seeds: int = 3) -> list[FrozenTrial]:
    """Seed re-runs at every batch size where E(B) = E_min (1 + B / b_crit) holds exactly, and the efficiency curve."""
    rng = random.Random(0)
    trials = []
    for seed in range(seeds):
        for size in SIZES:
            small_examples = BUDGET * (1 + SMALL / b_crit) / (1 + size / b_crit)
            trials.append(_trial(size, "seed", seed, small_loss(small_examples, seed) + rng.gauss(0, noise) * (size > SMALL)))
        trials += [_trial(SMALL, "efficiency", seed, small_loss(BUDGET * f, seed), round(BUDGET * f)) for f in (0.125, 0.25, 0.5)]
    return trials


@pytest.mark.parametrize("b_crit", [40.0, 200.0, 700.0])
def test_the_inversion_recovers_a_planted_critical_batch_size(b_crit: float) -> None:
    trials = planted_study(b_crit)
    result = critical_batch(trials, seed_losses(trials), None)
    assert result.b_crit_empirical == pytest.approx(b_crit, rel=1e-6)
    assert result.smallest_batch == SMALL and result.budget_examples == BUDGET
    assert "b_simple: no noise-scale probe on this study (python -m search.probe --study NAME)" in result.reasons


def test_noise_gives_an_interval_that_holds_the_planted_value() -> None:
    trials = planted_study(200.0, noise=0.01)
    result = critical_batch(trials, seed_losses(trials), None)
    assert result.b_crit_ci95 is not None
    low, high = result.b_crit_ci95
    assert low < 200.0 < (high or math.inf) and low < result.b_crit_empirical < (high or math.inf)  # type: ignore[operator]


def test_points_beyond_the_curve_are_counted_and_left_out() -> None:
    # b_crit 20: batch size 1024 needs 1 + 1024/20 over 1 + 16/20 = 29x the examples, more than the curve's 8x.
    trials = planted_study(20.0)
    result = critical_batch(trials, seed_losses(trials), None)
    assert result.outside_curve == 3 * sum(
        BUDGET / (BUDGET * (1 + SMALL / 20) / (1 + b / 20)) > 8 for b in SIZES[1:]
    )
    assert result.b_crit_empirical == pytest.approx(20.0, rel=1e-6)


def test_a_constant_noise_scale_predicts_the_planted_frontier() -> None:
    b_crit = 150.0
    trials = planted_study(b_crit)
    probe = ProbeResult.from_dict({
        "created": "2026-12-07T00:00:00", "batch_size": 64, "effective_lr": 0.1, "momentum": 0.9, "train_examples": 16384,
        "small_batch": 16, "big_batch": 256, "measurements": 4,
        "points": [{"examples_seen": e, "b_simple": b_crit, "b_simple_loss": 2.0} for e in (0, 8192, 16384)],
    })
    result = critical_batch(trials, seed_losses(trials), probe)
    assert result.b_simple == b_crit and result.ratio == pytest.approx(1.0, rel=1e-6)
    mean_losses = {b: sum(small_loss(BUDGET * (1 + SMALL / b_crit) / (1 + b / b_crit), k) for k in range(3)) / 3 for b in SIZES}
    for size in SIZES:
        assert result.predicted[size] == pytest.approx(mean_losses[size], abs=1e-3)


def test_without_an_efficiency_curve_the_reason_is_given() -> None:
    trials = [t for t in planted_study(100.0) if t.user_attrs["frontier_role"] == "seed"]
    result = critical_batch(trials, seed_losses(trials), None)
    assert result.b_crit_empirical is None and any(r.startswith("b_crit_empirical: no data-efficiency curve") for r in result.reasons)


def test_curve_pieces() -> None:
    assert monotone([3.0, 2.0, 2.2, 1.0]) == (3.0, 2.1, 2.1, 1.0)
    curve = Curve((100.0, 200.0, 400.0), (3.0, 2.0, 1.5))
    assert curve.examples_for(2.5) == pytest.approx(math.sqrt(100 * 200))
    assert curve.examples_for(3.5) is None  # worse than the smallest budget: outside the curve
    assert curve.loss_at(200.0) == pytest.approx(2.0) and curve.loss_at(50.0) is None
    assert fit_b_crit(invert({32: {0: 2.5}}, {0: curve}, 16, 400), 16) is None  # one point: no fit
    assert doubling_cost(100.0, 100.0) == pytest.approx(0.5)
