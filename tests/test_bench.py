"""The benchmarks' own arithmetic: the search surrogate, the matched lr ranges, the pruning table."""
from __future__ import annotations

import argparse
import math

import numpy as np

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
