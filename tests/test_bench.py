"""The benchmarks' own arithmetic: the search surrogate, the matched lr ranges, the pruning table."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from bench.pruning import StudyResult, markdown
from bench.search import (
    LONG_METHODS,
    METHODS,
    REFERENCE_MOMENTUM,
    Surrogate,
    method_spec,
    search_curve,
    trials_to_reach,
)


def _bowl(batch_size: int, lr: float, momentum: float) -> float:
    """A smooth loss whose best effective lr grows with B: minimum 1.5 at lr = 0.1 * B / 64."""
    return 1.5 + 0.2 * (math.log10(lr / (0.1 * batch_size / 64))) ** 2 + 0.3 * (momentum - 0.8) ** 2


def _record(n: int = 60) -> dict:
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(n):
        batch_size, lr, momentum = int(2 ** rng.integers(4, 10)), float(10 ** rng.uniform(-3, 0.5)), float(rng.uniform(0.5, 0.98))
        trials.append({"batch_size": batch_size, "effective_lr": lr, "momentum": momentum,
                       "final_val_loss": _bowl(batch_size, lr, momentum) + 0.005 * float(rng.standard_normal())})
    trials.append({"batch_size": 64, "effective_lr": 3.0, "momentum": 0.9, "final_val_loss": float("nan")})  # diverged
    return {"num_classes": 10, "trials": trials}


def test_surrogate_fits_measured_trials_and_finds_their_optimum() -> None:
    surrogate = Surrogate(_record())
    assert surrogate.loo_rmse < 0.3 * surrogate.std  # R^2 above 0.9, despite the clipped and diverged trials
    assert max(surrogate.y) == math.log(10)  # the diverged trial counts as chance-level loss
    grid = [(b, 10 ** e, 0.8) for b in (16, 64, 256) for e in np.linspace(-3, 0.5, 36)]
    for batch_size in (16, 64, 256):
        best = min((g for g in grid if g[0] == batch_size), key=lambda g: surrogate(*g))
        assert abs(math.log10(best[1] / (0.1 * batch_size / 64))) < 0.25
        assert abs(surrogate(*best) - 1.5) < 0.03


def test_every_parameterization_spans_the_same_effective_lr_at_the_reference_point() -> None:
    ends = set()
    for method in METHODS + LONG_METHODS:
        spec = method_spec(method, seed=0)
        reference = spec.lr_parameterization.reference_batch_size
        ends.add(tuple(round(spec.lr_parameterization.effective_lr(lr, reference, REFERENCE_MOMENTUM), 9)
                       for lr in (spec.search_space.lr.low, spec.search_space.lr.high)))
    assert len(ends) == 1


def test_search_curve_scores_each_sampled_trial() -> None:
    surrogate = Surrogate(_record())
    curve = search_curve(METHODS[1], seed=3, n_trials=12, surrogate=surrogate)
    assert len(curve) == 12 and all(1.4 < value <= math.log(10) + 0.1 for value in curve)
    assert trials_to_reach([2.0, 1.9, 1.6, 1.55], threshold=1.6) == 3
    assert trials_to_reach([2.0, 1.9], threshold=1.6) is None


def test_pruning_table_reports_ratio_gap_and_target() -> None:
    results = [
        StudyResult("none", seed, examples=16 * 8192, complete=16, pruned=0, best_loss=2.0, seconds=100.0) for seed in (0, 1)
    ] + [
        StudyResult("default", seed, examples=4 * 8192, complete=5, pruned=11, best_loss=2.03 + 0.02 * seed, seconds=30.0)
        for seed in (0, 1)
    ]
    args = argparse.Namespace(budget=8192, trials=16)
    text = markdown(results, args, "hyperband", "python -m bench.pruning")
    assert "| hyperband (default) | 32,768 | 0.250 |" in text
    assert "examples ratio 0.250 (met)" in text
    assert "best-loss gap +2.00% (missed by 1.00%)" in text  # (2.03 + 2.05) / 2 / 2.0 - 1


def test_frontier_search_counts_rounds_per_batch_size_against_its_own_bar() -> None:
    from bench.frontier_search import (
        BASELINE,
        Way,
        frontier_spec,
        median_over,
        ratio_interval,
        rounds_to_reach,
    )

    surrogate = Surrogate(_record())
    sizes = frontier_spec(BASELINE, 0).search_space.batch_sizes()
    assert frontier_spec(Way("tpe", True), 0).frontier.share_tuning and not frontier_spec(BASELINE, 0).frontier.share_tuning
    # A bar every trial meets is reached in round 1; one none can meet counts as rounds + 1.
    easy = rounds_to_reach(Way("tpe", True), 0, 2, surrogate, dict.fromkeys(sizes, 10.0))
    never = rounds_to_reach(BASELINE, 0, 2, surrogate, dict.fromkeys(sizes, 0.0))
    assert set(easy.values()) == {1} and set(never.values()) == {3} and sorted(easy) == sizes
    counts = [{16: 2, 32: 4}, {16: 6, 32: 8}]
    assert median_over(counts) == 5
    low, high = ratio_interval(counts, counts)
    assert low <= 1.0 <= high


def test_rung_correlation_per_batch_size_and_the_first_trusted_rung() -> None:
    from bench.rung_correlation import correlations, first_trusted_rung, pooled
    from bench.rung_correlation import markdown as rung_markdown

    rng = np.random.default_rng(0)
    trials = []
    for size in (16, 64):
        for _ in range(12):
            final = float(rng.uniform(1.5, 2.2))
            # Rung 1 ranks at random; rungs 2 and 3 rank as the end does; one diverged trial is chance-level throughout.
            trials.append({"batch_size": size, "final_val_loss": final,
                           "intermediate": {"100": float(rng.uniform(1.5, 2.2)), "200": final + 0.05, "300": final + 0.02}})
    trials.append({"batch_size": 16, "final_val_loss": float("nan"), "intermediate": {"100": float("nan"), "200": 9.0, "300": float("nan")}})
    trials.append({"batch_size": 512, "final_val_loss": 2.0, "intermediate": {"100": 2.0, "200": 2.0, "300": 2.0}})  # too few: left out
    record = {"num_classes": 10, "trials": trials, "command": "c", "date": "d",
              "study": {"budget_examples": 300, "model": {"name": "tiny_cnn", "args": {}}, "schedule": {"decay": "linear"}}}
    rungs, table, counts = correlations(record)
    assert rungs == [100, 200, 300] and sorted(table) == [16, 64] and counts == {16: 13, 64: 12}
    assert table[16][300] == pytest.approx(1.0) and table[64][200] == pytest.approx(1.0)
    assert abs(table[64][100]) < 0.8
    assert first_trusted_rung(rungs, table) == 200
    assert pooled(table, 300) == pytest.approx(1.0, abs=1e-5)
    assert "First rung from which every batch size's correlation stays >= 0.8: 200 examples (0.667 of the budget)." in rung_markdown(record)
