"""A fixed training time per trial: seconds become steps through the stored speed profile."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from search.analysis.speeds import two_speeds, two_speeds_sentence
from search.config.load import load_spec, validate_spec
from search.errors import UserError
from search.measure import time_budget
from search.measure.profile import SpeedProfile
from search.store import measurements
from search.train.device import worker_device
from search.train.plan import TrainingPlan
from tests.conftest import REPO, SMALL_STUDY, create_study, merge, run_cli
from tests.test_speed import profile_of


def test_spec_defers_the_step_check_to_run_time_and_keys_comparability_on_the_seconds() -> None:
    # 512 examples give batch size 64 fewer than min_steps: refused with an example budget, fine with seconds.
    with pytest.raises(UserError, match="min_steps"):
        validate_spec(merge(SMALL_STUDY, {"name": "t", "min_steps": 16}))
    spec = validate_spec(merge(SMALL_STUDY, {"name": "t", "min_steps": 16, "budget_seconds": 4}))
    assert spec.report_every_ms() == 500  # about eight validations
    assert spec.pruning_resources() == (500, 4000)
    assert spec.comparability_key()["budget_seconds"] == 4
    assert validate_spec(merge(SMALL_STUDY, {"name": "t"})).comparability_key()["budget_seconds"] is None
    with pytest.raises(UserError, match="report_every_seconds=5 exceeds budget_seconds=4"):
        validate_spec(merge(SMALL_STUDY, {"name": "t", "budget_seconds": 4, "pruner": {"report_every_seconds": 5}}))
    with pytest.raises(UserError, match="budget_seconds"):
        validate_spec(merge(SMALL_STUDY, {"name": "t", "budget_seconds": 0}))


def test_time_plan_fixes_steps_and_equal_time_checkpoints_from_the_profile() -> None:
    spec = validate_spec(merge(SMALL_STUDY, {"name": "t", "budget_seconds": 2, "pruner": {"report_every_seconds": 0.25}}))
    profile = profile_of({16: 500.0, 32: 1000.0, 64: 1000.0})
    plan = TrainingPlan(batch_size=32, steps=1, effective_lr=0.1, momentum=0.9, report_every_examples=128, seed=0)
    timed, attrs = time_budget.time_plan(plan, spec, profile)
    assert timed.steps == 62  # floor(2 s x 1000 ex/s / 32)
    assert timed.report_every_examples == 8 * 32  # round(0.25 s x 1000 / 32) steps per checkpoint
    assert attrs["predicted_seconds"] == pytest.approx(62 * 32 / 1000)
    assert attrs["report_every_ms"] == 250 and attrs["predicted_examples_per_second"] == 1000
    small, _ = time_budget.time_plan(TrainingPlan(16, 1, 0.1, 0.9, 128, 0), spec, profile)
    assert small.steps == 62 and small.report_every_examples == 8 * 16  # half the rate, half the batch: same steps
    with_micro, attrs = time_budget.time_plan(TrainingPlan(64, 1, 0.1, 0.9, 128, 0, micro_batch_size=16), spec, profile)
    assert attrs["predicted_examples_per_second"] == 500  # the step runs at its micro-batch's rate
    assert with_micro.steps == math.floor(2 * 500 / 64)


def test_too_short_a_time_is_a_user_error_naming_the_seconds_needed() -> None:
    spec = validate_spec(merge(SMALL_STUDY, {"name": "t", "budget_seconds": 1, "min_steps": 8}))
    with pytest.raises(UserError, match=r"batch sizes 64 \(7 steps\); raise --budget-seconds to at least 2"):
        time_budget.check_time_budget(spec, profile_of({16: 500.0, 64: 500.0}))


def _trial(batch_size: int, points: list[tuple[int, float]], rate: float, state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    examples, final = points[-1]
    return create_trial(
        state=state,
        value=final if state == TrialState.COMPLETE else None,
        params={"batch_size": batch_size, "lr": 0.1, "momentum": 0.9},
        distributions={
            "batch_size": CategoricalDistribution([16, 64, 256]), "lr": FloatDistribution(0.01, 1, log=True), "momentum": FloatDistribution(0.5, 0.99),
        },
        intermediate_values=dict(points),
        user_attrs={"examples_per_second": rate, "examples_seen": examples, "final_val_loss": final, "device": "cpu (2 threads)"},
    )


def test_two_speeds_finds_the_fastest_to_target_and_the_best_per_example() -> None:
    trials = [
        # Batch 16 learns most per example but runs at 100 examples/s; batch 64 at 800.
        _trial(16, [(1024, 1.5), (2048, 1.0)], rate=100.0),
        _trial(16, [(1024, 1.8), (2048, 1.4)], rate=100.0),
        _trial(64, [(1024, 1.6), (2048, 1.04)], rate=800.0),
        _trial(256, [(1024, 2.2)], rate=900.0, state=TrialState.PRUNED),
    ]
    (result,) = two_speeds(trials)
    assert result.target_loss == pytest.approx(1.05)  # best 1.0 + 5%
    assert result.seconds_to_target == {16: pytest.approx(20.48), 64: pytest.approx(2.56), 256: None}
    assert result.by_examples[16] == [(1024, 1.5), (2048, 1.0)]  # best over its two trials
    assert result.common_examples == 1024  # batch 256 was pruned there
    sentence = two_speeds_sentence(result)
    assert sentence.startswith("On cpu (2 threads), batch size 64 reaches loss 1.0500 in the least time (2.6 s of training; next batch size 16 in 20.5 s)")
    assert "at a fixed number of examples (1,024, the most every batch size here reached) batch size 16 is best" in sentence
    assert "fewer than 3 trials at batch sizes 16, 64, 256" in sentence
    (strict,) = two_speeds(trials, target_loss=1.02)
    assert two_speeds_sentence(strict).startswith("On cpu (2 threads), only batch size 16 reached loss 1.0200 (in 20.5 s")


@pytest.mark.slow
def test_time_budget_study_end_to_end(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file({"budget_seconds": 1.5, "min_steps": 2, "pruner": {"name": "median", "report_every_seconds": 0.5}})
    url = f"sqlite:///{tmp_path / 'time.sqlite3'}"
    refused = run_cli("search.run", "--study", str(path), "--storage", url, "--skip-speed-profile", cwd=REPO)
    assert refused.returncode == 2 and "needs the speed profile" in refused.stderr
    # A stored profile (as `search.speed` leaves it) fixes the steps: this machine's live speed then does not matter.
    spec = load_spec(str(path))
    study = create_study(url, spec)
    profile = profile_of({16: 2000.0, 32: 3000.0, 64: 4000.0})
    measurements.store_profile(study, SpeedProfile(**{**profile.__dict__, "device": worker_device()[1]}))
    result = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "no profile for" not in result.stdout and "budget 1.5 s of training" in result.stdout
    trials = optuna.load_study(study_name=path.stem, storage=url).get_trials()
    assert len(trials) == 3
    for trial in trials:
        attrs, batch_size = trial.user_attrs, trial.params["batch_size"]
        # Steps come from a predicted rate, not the clock: floor(1.5 s x rate / B), the rate stored on the trial.
        assert attrs["steps"] == math.floor(1.5 * attrs["predicted_examples_per_second"] / batch_size)
        if trial.number == 0:  # the first trial has only the stored profile to go by
            assert attrs["steps"] == {16: 187, 32: 140, 64: 93}[batch_size]
        else:  # later ones use the rates earlier trials trained at on this device (the profile said 2000-4000 ex/s)
            earlier = [t.user_attrs["examples_per_second"] for t in trials[: trial.number]]
            assert attrs["predicted_examples_per_second"] != profile.rate(batch_size) and min(earlier) > 0
        assert attrs["predicted_seconds"] <= 1.5 and attrs["train_seconds"] > 0 and attrs["budget_seconds"] == 1.5
        # Pruners compare at equal predicted time: reports keyed by multiples of 500 ms.
        assert set(trial.intermediate_values) <= {500, 1000, 1500} and trial.intermediate_values
        if trial.state == TrialState.COMPLETE:
            assert attrs["examples_seen"] == attrs["steps"] * batch_size
    report = run_cli("search.report", "--study", path.stem, "--storage", url, "--out", str(tmp_path / "report"), cwd=REPO)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    assert "The two speeds" in page and "On cpu" in page and "1.5 s of training per trial" in page
    assert (tmp_path / "report" / "two_speeds_0.png").is_file() and (tmp_path / "report" / "throughput.png").is_file()


@pytest.mark.slow
def test_run_measures_each_device_once_and_can_skip_it(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file({"n_trials": 1, "search_space": {"batch_size": [16, 32]}})
    url = f"sqlite:///{tmp_path / 'profile.sqlite3'}"
    skipped = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", "--skip-speed-profile", cwd=REPO)
    assert skipped.returncode == 0, skipped.stderr
    assert measurements.profiles_in(optuna.load_study(study_name=path.stem, storage=url).user_attrs) == []
    first = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", "--n-trials", "2", cwd=REPO)
    assert first.returncode == 0, first.stderr
    assert "no profile for cpu" in first.stdout and "<- fastest" in first.stdout
    (profile,) = measurements.profiles_in(optuna.load_study(study_name=path.stem, storage=url).user_attrs)
    assert [s.batch_size for s in profile.sizes] == [8, 16, 32]
    again = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", "--n-trials", "3", cwd=REPO)
    assert again.returncode == 0 and "no profile" not in again.stdout
