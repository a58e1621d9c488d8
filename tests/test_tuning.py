"""Tuning adequacy: the expected best-of-k curve per batch size, and the under-tuned batch sizes named (issue 23)."""
from __future__ import annotations

import itertools
import statistics

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from search.analysis.tuning import tuning_curves, tuning_sentences
from search.stats import expected_best_of_k
from tests.test_frontier import _seeds, _trial


def test_expected_best_of_k_is_exact() -> None:
    assert expected_best_of_k([1.0, 2.0, 3.0], 1) == pytest.approx(2.0)
    assert expected_best_of_k([3.0, 1.0, 2.0], 2) == pytest.approx(14 / 9)  # P(min = 1, 2, 3) = 5/9, 3/9, 1/9
    # Against brute force: every ordered k-tuple of draws with replacement, equally likely.
    values = [0.7, 1.3, 0.9, 2.0]
    for k in (1, 2, 3):
        brute = statistics.fmean(min(draw) for draw in itertools.product(values, repeat=k))
        assert expected_best_of_k(values, k) == pytest.approx(brute)
    assert expected_best_of_k(values, 200) == pytest.approx(0.7, abs=1e-6)


def test_a_batch_size_whose_best_still_falls_is_under_tuned() -> None:
    trials = _seeds({16: [1.0, 1.01, 1.02], 32: [1.0, 1.01, 1.02]})  # seed half-width 4.303 x 0.01 / sqrt(3) = 0.0248
    rng = np.random.default_rng(0)
    lucky = [2.0] * 7 + [1.0]  # one good draw in eight: the expected best is still falling fast
    settled = list(1.0 + rng.normal(0, 0.002, 8))
    for index, (a, b) in enumerate(zip(lucky, settled)):
        trials.append(_trial(len(trials), 16, a, "search", index))
        trials.append(_trial(len(trials), 32, b, "search", index))
    trials.append(_trial(len(trials), 32, 0.0, "search", 9, state=TrialState.PRUNED, intermediate={2048: 3.0}))  # stopped at 3.0
    curves = {c.batch_size: c for c in tuning_curves(trials, {16: 0.0248, 32: 0.0248})}
    assert curves[16].draws == 8 and curves[16].converged is False and curves[16].improvement > 0.0248
    assert curves[32].draws == 9 and curves[32].completed == 8 and curves[32].converged is True
    for curve in curves.values():
        assert all(low <= mean + 1e-12 and mean <= high + 1e-12 for mean, (low, high) in zip(curve.expected_best, curve.band))
        assert curve.expected_best == sorted(curve.expected_best, reverse=True)  # more draws never hurt
    lines = tuning_sentences(list(curves.values()))
    assert any(line.startswith("Under-tuned") and "batch size 16" in line and "batch size 32" not in line for line in lines), lines


def test_too_few_draws_are_not_judged() -> None:
    trials = [_trial(i, 16, 1.0 + i / 10, "search", i) for i in range(3)]
    (curve,) = tuning_curves(trials, {16: 0.01})
    assert curve.converged is None and curve.improvement is None
    assert any(line.startswith("Tuning not judged") for line in tuning_sentences([curve]))


def test_the_report_carries_the_tuning_and_its_caveat() -> None:
    from search.analysis.study_report import analyze

    study = optuna.create_study()
    trials = _seeds({16: [1.0, 1.1, 1.2], 32: [1.005, 1.102, 1.203]})
    trials += [_trial(len(trials) + i, 16, v, "search", i) for i, v in enumerate([2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.9])]
    for trial in trials:
        study.add_trial(trial)
    report = analyze(study)
    assert [c.batch_size for c in report.tuning] == [16] and report.tuning[0].converged is False
    assert report.recommendation is not None and report.recommendation.reference_batch_size == 16
    assert any(line.startswith("Caveat: the recommendation rests on under-tuned batch sizes (16)") for line in report.summary)
    assert '"tuning"' in report.to_json() and '"converged": false' in report.to_json()
