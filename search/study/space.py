"""The search space: what a trial samples and the learning rate it hands to the optimizer."""
from __future__ import annotations

import importlib.util
import zlib

import numpy as np
import optuna

from search.config.spec import MomentumRange, StudySpec
from search.errors import UserError
from search.record import (
    BATCH_SIZE,
    LR,
    MOMENTUM,
    ONE_MINUS_MOMENTUM,
    SCHEDULE,
    Hyperparams,
)
from search.study.per_batch_size import PerBatchSizeSampler


def sample(trial: optuna.Trial, spec: StudySpec) -> Hyperparams:
    """Sample batch size, learning rate and momentum jointly (TPE models them together)."""
    space = spec.search_space
    batch_size = int(trial.suggest_categorical(BATCH_SIZE, space.batch_sizes()))
    lr = trial.suggest_float(LR, space.lr.low, space.lr.high, log=space.lr.log)
    momentum = _sample_momentum(trial, space.momentum)
    # A single listed schedule is fixed, not a parameter: studies without the choice keep their parameters.
    schedule = str(trial.suggest_categorical(SCHEDULE, space.schedule)) if len(space.schedule) > 1 else space.schedule[0]
    return Hyperparams(batch_size, lr, momentum, spec.lr_parameterization.effective_lr(lr, batch_size, momentum), schedule)


def _sample_momentum(trial: optuna.Trial, momentum: MomentumRange) -> float:
    """Momentum, or with `log: one_minus` 1 - momentum on a log scale. Then momentum is stored as
    a one-point parameter: every reader finds it under `momentum`, a re-run of the trial's
    parameters (`enqueue_trial`) gets the same value, and samplers skip one-point parameters."""
    if momentum.log != "one_minus":
        return trial.suggest_float(MOMENTUM, momentum.low, momentum.high, log=momentum.log)
    value = 1 - trial.suggest_float(ONE_MINUS_MOMENTUM, 1 - momentum.high, 1 - momentum.low, log=True)
    return trial.suggest_float(MOMENTUM, value, value)


def sampler_seed(seed: int, trials_so_far: int = 0, worker_index: int = 0, host: str = "") -> int:
    """The seed one worker's sampler draws with: the study's stored seed, mixed with how many
    trials the study held when the worker started, the worker's index and its host. Reruns,
    parallel workers and extra hosts therefore draw fresh points, while a study run the same way
    (same commands, same host) draws the same ones again."""
    if not (trials_so_far or worker_index or host):
        return seed
    entropy = [seed, trials_so_far, worker_index, zlib.crc32(host.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


# The package each sampler needs beyond Optuna (import and pip names agree).
_SAMPLER_PACKAGES = {"gp": "scipy", "cmaes": "cmaes", "qmc": "scipy"}


def build_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler; `seed` defaults to the study's (`sampler_seed` gives each worker its own).

    - tpe (default): Optuna 5 makes it multivariate with a constant liar, which suits a joint
      batch-size/lr/momentum space searched by parallel workers.
    - gp: Gaussian-process Bayesian optimization, made for expensive trials and small budgets;
      models the categorical batch size natively, and parallel workers' running trials through
      q-batch expected improvement. It learns from completed trials only, not pruned ones. Workers
      that ask at the same moment, before either has stored its point, see the same evidence and
      can propose the same point (often on a bound of the range); random-draw samplers do not.
    - cmaes: CMA-ES over lr and momentum; it cannot model categorical parameters, so the batch
      size (and a searched schedule) come from its fallback, a RandomSampler with the same seed.
      Workers asking within one generation draw extra members of it (no constant liar).
    - qmc: a scrambled Sobol sequence, one for the whole study: its scrambling uses the study's
      seed (not the worker's), so that all workers and reruns share one sequence and its count.
      In a frontier study the batch sizes take turns along it: each one's points cover lr and
      momentum together more evenly than random draws, but lr alone less evenly (8 batch sizes
      of 8 trials: 4.4 of 8 lr octiles each, random 5.2).
    In a frontier study the others see only the trials of the trial's own batch size (`PerBatchSizeSampler`),
    or with `frontier.share_tuning` every batch size's trials aligned to it.
    """
    _check_packages(spec)
    seed = spec.sampler.seed if seed is None else seed
    startup = startup_trials(spec)
    base: optuna.samplers.BaseSampler
    if spec.sampler.name == "random":
        base = optuna.samplers.RandomSampler(seed=seed)
    elif spec.sampler.name == "gp":
        base = optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    elif spec.sampler.name == "cmaes":
        base = optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=startup, independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            warn_independent_sampling=False,  # the batch size is categorical in every trial: said above, not per trial
        )
    elif spec.sampler.name == "qmc":
        base = optuna.samplers.QMCSampler(scramble=True, seed=spec.sampler.seed, independent_sampler=optuna.samplers.RandomSampler(seed=seed))
    else:
        base = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    return PerBatchSizeSampler(base, shared=spec.frontier.share_tuning) if spec.strategy == "frontier" else base


def _check_packages(spec: StudySpec) -> None:
    """One paragraph (a UserError) if the study's sampler needs a package that is not installed."""
    package = _SAMPLER_PACKAGES.get(spec.sampler.name)
    if package is not None and importlib.util.find_spec(package) is None:
        raise UserError(
            f"Study '{spec.name}' uses sampler.name: {spec.sampler.name}, which needs the {package} package, and it is "
            f"not installed in this environment. Install it (`pip install {package}`) and run again, or choose another "
            "sampler (sampler.name in the study file, or --sampler tpe). The study was not created or changed."
        )


def startup_trials(spec: StudySpec) -> int:
    """Random trials before TPE, GP or CMA-ES model: per batch size in a frontier study, where the default of 10
    would leave a search of 8 trials random; a third of them (at least 2) unless the file sets it."""
    if spec.strategy == "frontier" and "n_startup_trials" not in spec.sampler.model_fields_set:
        return max(2, spec.frontier.trials_per_batch_size // 3)
    return spec.sampler.n_startup_trials
