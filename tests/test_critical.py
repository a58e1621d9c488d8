"""The critical batch size: inverting a planted frontier through its data-efficiency curve, and predicting it from B_simple."""
from __future__ import annotations

import math
import random
import statistics

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, create_trial

from search.analysis.critical import (
    Curve,
    b_simple_at_loss,
    critical_batch,
    critical_sentences,
    doubling_cost,
    fit_b_crit,
    invert,
    monotone,
    sweeps,
)
from search.analysis.frontier import seed_losses
from search.record import ProbePoint, ProbeResult

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


def planted_study(b_crit: float, noise: float = 0.0, seeds: int = 3, rng_seed: int = 0, b_crit_above: dict[int, float] | None = None) -> list[FrozenTrial]:
    """Seed re-runs at every batch size where E(B) = E_min (1 + B / b_crit) holds exactly (or, per batch size, the
    B_crit of `b_crit_above`), plus Gaussian noise in the loss, and the efficiency curve."""
    rng = random.Random(rng_seed)
    trials = []
    for seed in range(seeds):
        for size in SIZES:
            planted = (b_crit_above or {}).get(size, b_crit)
            small_examples = BUDGET * (1 + SMALL / planted) / (1 + size / planted)
            trials.append(_trial(size, "seed", seed, small_loss(small_examples, seed) + rng.gauss(0, noise) * (size > SMALL)))
        trials += [_trial(SMALL, "efficiency", seed, small_loss(BUDGET * f, seed), round(BUDGET * f)) for f in (0.125, 0.25, 0.5)]
    return trials


@pytest.mark.parametrize("b_crit", [pytest.param(40.0, marks=pytest.mark.slow), 200.0, 700.0])  # 40: many censored points, slow to fit
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


@pytest.mark.slow
def test_points_beyond_the_curve_are_fitted_as_censored_lower_bounds() -> None:
    # b_crit 20: batch size 1024 needs 1 + 1024/20 over 1 + 16/20 = 29x the examples, more than the curve's 8x.
    trials = planted_study(20.0)
    result = critical_batch(trials, seed_losses(trials), None)
    outside = 3 * sum(BUDGET / (BUDGET * (1 + SMALL / 20) / (1 + b / 20)) > 8 for b in SIZES[1:])
    assert result.outside_curve == result.censored == outside > 0
    assert result.b_crit_empirical == pytest.approx(20.0, rel=1e-4)


@pytest.mark.slow
def test_the_censored_fit_is_not_biased_up_by_the_lucky_seeds() -> None:
    # With noise, only the seeds that happened to do well at the largest batch sizes stay inside the curve: dropping the
    # others would keep the lucky ones and move B_crit up. Fitted as lower bounds they pull it back.
    points = []
    for replicate in range(5):
        trials = planted_study(30.0, noise=0.08, seeds=6, rng_seed=replicate)
        result = critical_batch(trials, seed_losses(trials), None)
        assert result.censored > 0
        points.append(result.b_crit_empirical)
    assert abs(statistics.median(points) - 30.0) / 30.0 < 0.2, points


@pytest.mark.slow
def test_the_bootstrap_interval_covers_the_planted_value_in_at_least_90_of_100_replications() -> None:
    covered = 0
    for replicate in range(100):
        trials = planted_study(200.0, noise=0.02, seeds=8, rng_seed=replicate)
        low, high = critical_batch(trials, seed_losses(trials), None).b_crit_ci95  # type: ignore[misc]
        covered += low <= 200.0 <= (high or math.inf)
    assert covered >= 90, covered


def test_lack_of_fit_rejects_one_b_crit_when_batch_sizes_disagree() -> None:
    mixed = planted_study(50.0, noise=0.005, seeds=4, b_crit_above={256: 800.0, 512: 800.0, 1024: 800.0})
    result = critical_batch(mixed, seed_losses(mixed), None)
    assert result.lack_of_fit_p is not None and result.lack_of_fit_p < 0.01
    implied = result.b_crit_per_batch_size
    assert implied[64][0] == pytest.approx(50.0, rel=0.3) and implied[1024][0] == pytest.approx(800.0, rel=0.3)
    assert any("One B_crit does not fit" in line for line in critical_sentences(result, SIZES))
    one = planted_study(50.0, noise=0.005, seeds=4)
    assert critical_batch(one, seed_losses(one), None).lack_of_fit_p > 0.05  # type: ignore[operator]


def test_b_simple_is_read_at_the_loss_where_b_crit_is_measured() -> None:
    trajectory = [ProbePoint(0, 0, None, 2.3, 1.0, 1.0, 1500.0, 100.0), ProbePoint(8, 128, 2.0, 1.9, 1.0, 1.0, 300.0, 20.0),
                  ProbePoint(16, 256, 1.6, 1.5, 1.0, 1.0, 200.0, 10.0), ProbePoint(24, 384, 1.3, 1.2, 1.0, 1.0, 2000.0, 300.0)]
    value, se = b_simple_at_loss(trajectory, 1.7)  # halfway between the estimates at 1.9 and 1.5
    assert value == pytest.approx(250.0) and se == pytest.approx(15.0)
    assert b_simple_at_loss(trajectory, 3.0) == (None, None)  # outside the trajectory


def test_a_constant_noise_scale_predicts_the_planted_frontier() -> None:
    b_crit = 150.0
    trials = planted_study(b_crit)
    probe = ProbeResult.from_dict({
        "created": "2026-12-07T00:00:00", "batch_size": 64, "effective_lr": 0.1, "momentum": 0.9, "train_examples": 16384,
        "small_batch": 16, "big_batch": 256, "measurements": 4,
        "points": [{"examples_seen": e, "b_simple": b_crit, "b_simple_loss": loss} for e, loss in ((0, 5.0), (8192, 1.0), (16384, 0.01))],
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


def test_the_reference_sweep_is_reported_with_its_pick_and_its_edges() -> None:
    def run(role: str, lr: float, value: float, fraction: float | None = None, of: int | None = None, number: int = 0) -> FrozenTrial:
        trial = create_trial(
            params={"batch_size": SMALL, "lr": lr, "momentum": 0.9}, distributions=DISTRIBUTIONS, value=value,
            user_attrs={"frontier_role": role, "frontier_index": 0, "frontier_fraction": fraction, "frontier_of": of,
                        "budget_examples": round(BUDGET * (fraction or 1)), "final_val_loss": value},
        )
        trial.number = number
        return trial

    trials = [run("search", 0.1, 1.0, number=7)]
    trials += [run("reference", lr, loss, 0.25, 7) for lr, loss in [(0.05, 1.3), (0.1, 1.2), (0.2, 1.25)]]  # the middle: inside
    trials += [run("reference", lr, loss, 0.5, 7) for lr, loss in [(0.05, 1.2), (0.1, 1.15), (0.2, 1.1)]]  # the largest: an edge
    trials += [run("efficiency", 0.1, 1.21, 0.25, 7), run("efficiency", 0.2, 1.12, 0.5, 7), run("seed", 0.1, 1.0, of=7)]
    found = sweeps(trials)
    assert [(w.fraction, w.rates, w.chosen, w.full_budget, w.at_edge) for w in found] == [
        (0.25, (0.05, 0.1, 0.2), 0.1, 0.1, False), (0.5, (0.05, 0.1, 0.2), 0.2, 0.1, True)]
    words = " ".join(critical_sentences(critical_batch(trials, seed_losses(trials), None), SIZES))
    assert "re-tuned at each share of the budget E, by a sweep of up to 3 rates" in words
    assert "E×0.25: 0.1 (×1), E×0.5: 0.2 (×2)" in words and "At E×0.5 the pick is the sweep's edge" in words
