"""Every sampler runs real studies: in-process on SQLite (one worker, all SQLite allows) and as
`python -m search.run --workers 2` on PostgreSQL; `--sampler`, sampling log(1 - momentum), and
the errors a user can make about a sampler."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from search.api import Study
from search.config.load import load_spec, validate_spec
from search.errors import UserError
from search.run import _overrides, main, parse_args
from search.study.space import build_sampler, sample
from tests.conftest import SMALL_STUDY, merge, run_cli

SAMPLERS = ("tpe", "random", "gp", "cmaes", "qmc")
# No pruning, so every trial completes; GP and CMA-ES model from the second trial on.
PLAIN = {"pruner": {"name": "none", "args": {}}, "diagnostics": {"enabled": False}, "sampler": {"n_startup_trials": 1}}
ONE_MINUS = {"search_space": {"momentum": {"low": 0.5, "high": 0.98, "log": "one_minus"}}}


def assert_sampled_by(name: str, url: str, study_name: str, trials: list[FrozenTrial]) -> None:
    """What each sampler leaves in the storage (the sampler itself is not stored): GP and CMA-ES
    tag the trials they modelled, QMC counts its sequence on the study; TPE and random leave nothing.
    Samplers that draw at random (each worker from its own seed) never draw a point twice; GP
    maximizes a deterministic acquisition, so two workers that ask at the same moment, before either
    has stored its point, see the same evidence and may both propose it (seen: both at the lr bound)."""
    attrs = [key for trial in trials for key in trial.system_attrs]
    if name == "gp":
        assert any(key.startswith("gp:relative_params") for key in attrs)
    if name == "cmaes":
        assert any(key.startswith("cma:") for key in attrs)
    if name == "qmc":
        storage = optuna.storages.get_storage(url)
        assert any(key.startswith("qmc:") for key in storage.get_study_system_attrs(storage.get_study_id_from_name(study_name)))
    if name != "gp":
        assert len({(t.params["lr"], t.params["momentum"]) for t in trials}) == len(trials)  # no point drawn twice


def assert_in_space(trials: list[FrozenTrial], changes: dict[str, Any]) -> None:
    space = validate_spec(merge({"name": "t", **SMALL_STUDY}, changes)).search_space
    for trial in trials:
        assert trial.params["batch_size"] in space.batch_sizes()
        assert space.lr.low <= trial.params["lr"] <= space.lr.high
        assert space.momentum.low <= trial.params["momentum"] <= space.momentum.high


@pytest.mark.slow
@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_runs_a_study_on_sqlite(name: str, study_file: Callable[..., Path], tmp_path: Path) -> None:
    changes = merge(PLAIN, {"sampler": {"name": name}, "n_trials": 3})
    study = Study.from_file(study_file(changes), storage=f"sqlite:///{tmp_path / 'study.sqlite3'}")
    assert study.run(quiet=True, speed_profile=False) == 0
    trials = study.optuna_study().get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(3)) and all(t.state == TrialState.COMPLETE for t in trials)
    assert_in_space(trials, changes)
    assert_sampled_by(name, study.url, study.spec.name, trials)


# Two workers: the samplers whose parallel behaviour is their own (TPE's constant liar, GP's running trials, CMA-ES's
# shared generation, QMC's one sequence counted on the study); random draws from per-worker seeds (one worker above).
PARALLEL_SAMPLERS = ("tpe", "gp", "cmaes", "qmc")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("name", PARALLEL_SAMPLERS)
def test_parallel_samplers_run_a_study_with_two_workers_on_postgres(  # type: ignore[no-untyped-def]
    name: str, study_file: Callable[..., Path], tmp_path: Path, postgres_url: str, drop_studies,
) -> None:
    """The study file says tpe: `--sampler` chooses, and the study stores the sampler it ran with."""
    changes = {**PLAIN, **ONE_MINUS, "n_trials": 4}
    path = study_file(changes)
    drop_studies(postgres_url, path.stem)
    result = run_cli("search.run", "--study", str(path), "--sampler", name, "--workers", "2", "--storage", postgres_url,
                     "--skip-speed-profile", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name=path.stem, storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(4)) and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert study.user_attrs["spec"]["sampler"]["name"] == name
    assert_in_space(trials, changes)
    assert_sampled_by(name, postgres_url, path.stem, trials)
    assert all(t.params["momentum"] == 1 - t.params["one_minus_momentum"] for t in trials)


def test_log_one_minus_momentum_is_sampled_and_stored_as_momentum() -> None:
    spec = validate_spec(merge({"name": "t", **SMALL_STUDY}, ONE_MINUS))
    study = optuna.create_study(sampler=build_sampler(spec))
    for _ in range(4):
        trial = study.ask()
        hp = sample(trial, spec)
        study.tell(trial, hp.momentum)
    assert all(t.distributions["one_minus_momentum"] == FloatDistribution(1 - 0.98, 1 - 0.5, log=True) for t in study.trials)
    assert all(t.params["momentum"] == 1 - t.params["one_minus_momentum"] and 0.5 <= t.params["momentum"] <= 0.98 for t in study.trials)
    best = study.best_trial
    study.enqueue_trial(dict(best.params))  # how the frontier re-runs a best configuration
    again = sample(study.ask(), spec)
    assert (again.batch_size, again.lr, again.momentum) == (best.params["batch_size"], best.params["lr"], best.params["momentum"])


def test_log_one_minus_momentum_validates_its_range() -> None:
    spec = validate_spec(merge({"name": "t", **SMALL_STUDY}, {"search_space": {"momentum": {"low": 0.0, "high": 0.99, "log": "one_minus"}}}))
    assert spec.search_space.momentum.log == "one_minus"  # momentum 0 is 1 - momentum = 1: fine on a log scale
    with pytest.raises(UserError, match="momentum"):
        validate_spec(merge({"name": "t", **SMALL_STUDY}, {"search_space": {"momentum": {"low": 0.5, "high": 0.9, "log": "sqrt"}}}))


@pytest.mark.parametrize("name", SAMPLERS)
def test_frontier_samplers_keep_each_batch_size_and_rerun_its_best(name: str) -> None:
    """In a frontier study the batch size is queued per trial and the sampler models within it."""
    spec = validate_spec(merge({"name": "t", **SMALL_STUDY}, {
        **ONE_MINUS, "strategy": "frontier", "sampler": {"name": name}, "frontier": {"trials_per_batch_size": 6, "seeds": 2},
    }))
    study = optuna.create_study(sampler=build_sampler(spec))
    for index in range(18):
        batch_size = spec.search_space.batch_sizes()[index % 3]
        study.enqueue_trial({"batch_size": batch_size})
        trial = study.ask()
        hp = sample(trial, spec)
        assert hp.batch_size == batch_size
        study.tell(trial, abs(hp.lr - 0.1) + hp.momentum / 10)
    best = study.best_trial
    study.enqueue_trial(dict(best.params))
    again = sample(study.ask(), spec)
    assert (again.batch_size, again.lr, again.momentum) == (best.params["batch_size"], best.params["lr"], best.params["momentum"])


def test_sampler_flag_overrides_the_study_file() -> None:
    args = parse_args(["--study", "smoke", "--sampler", "gp"])
    assert load_spec(args.study, _overrides(args)).sampler.name == "gp"
    assert load_spec("smoke").sampler.name == "tpe"


def test_an_unknown_sampler_in_the_study_file_is_a_clean_exit_2(study_file: Callable[..., Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    assert main(["--study", str(study_file({"sampler": {"name": "hyperopt"}})), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "sampler.name" in err and "'gp'" in err and err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "x.sqlite3").exists()


def test_an_unknown_sampler_flag_is_an_argparse_error(study_file: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--study", str(study_file()), "--sampler", "hyperopt"])
    assert exit_.value.code == 2 and "invalid choice: 'hyperopt'" in capsys.readouterr().err


def test_a_sampler_without_its_package_is_one_paragraph(study_file: Callable[..., Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *rest: None if module == "cmaes" else real(module, *rest))
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    path = study_file({"sampler": {"name": "cmaes"}})
    assert main(["--study", str(path), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "pip install cmaes" in err and err.startswith("error: ") and "Traceback" not in err
    assert path.stem not in optuna.get_all_study_names(url)
