"""The search space: what a trial samples and the learning rate it hands to the optimizer."""
from __future__ import annotations

import zlib

import numpy as np
import optuna

from search.config.spec import StudySpec
from search.record import Hyperparams
from search.study.per_batch_size import PerBatchSizeSampler


def sample(trial: optuna.Trial, spec: StudySpec) -> Hyperparams:
    """Sample batch size, learning rate and momentum jointly (TPE models them together)."""
    space = spec.search_space
    batch_size = int(trial.suggest_categorical("batch_size", space.batch_sizes()))
    lr = trial.suggest_float("lr", space.lr.low, space.lr.high, log=space.lr.log)
    momentum = trial.suggest_float("momentum", space.momentum.low, space.momentum.high, log=space.momentum.log)
    # A single listed schedule is fixed, not a parameter: studies without the choice keep their parameters.
    schedule = str(trial.suggest_categorical("schedule", space.schedule)) if len(space.schedule) > 1 else space.schedule[0]
    return Hyperparams(batch_size, lr, momentum, spec.lr_parameterization.effective_lr(lr, batch_size, momentum), schedule)


def sampler_seed(seed: int, trials_so_far: int = 0, worker_index: int = 0, host: str = "") -> int:
    """The seed one worker's sampler draws with: the study's stored seed, mixed with how many
    trials the study held when the worker started, the worker's index and its host. Reruns,
    parallel workers and extra hosts therefore draw fresh points, while a study run the same way
    (same commands, same host) draws the same ones again."""
    if not (trials_so_far or worker_index or host):
        return seed
    entropy = [seed, trials_so_far, worker_index, zlib.crc32(host.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def build_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """TPE by default: Optuna 5 makes it multivariate with a constant liar, which suits a joint
    batch-size/lr/momentum space searched by parallel workers. `seed` defaults to the study's
    (`sampler_seed` gives each worker its own)."""
    seed = spec.sampler.seed if seed is None else seed
    if spec.sampler.name == "random":
        base: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        base = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(spec))
    return PerBatchSizeSampler(base) if spec.strategy == "frontier" else base


def startup_trials(spec: StudySpec) -> int:
    """Random trials before TPE models: per batch size in a frontier study, where the default of 10
    would leave a search of 8 trials random; a third of them (at least 2) unless the file sets it."""
    if spec.strategy == "frontier" and "n_startup_trials" not in spec.sampler.model_fields_set:
        return max(2, spec.frontier.trials_per_batch_size // 3)
    return spec.sampler.n_startup_trials
