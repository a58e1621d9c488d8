"""The search space: what a trial samples and the learning rate it hands to the optimizer."""
from __future__ import annotations


import optuna

from search.config.spec import StudySpec
from search.record import Hyperparams


def sample(trial: optuna.Trial, spec: StudySpec) -> Hyperparams:
    """Sample batch size, learning rate and momentum jointly (TPE models them together)."""
    space = spec.search_space
    batch_size = int(trial.suggest_categorical("batch_size", space.batch_sizes()))
    lr = trial.suggest_float("lr", space.lr.low, space.lr.high, log=space.lr.log)
    momentum = trial.suggest_float("momentum", space.momentum.low, space.momentum.high, log=space.momentum.log)
    # A single listed schedule is fixed, not a parameter: studies without the choice keep their parameters.
    schedule = str(trial.suggest_categorical("schedule", space.schedule)) if len(space.schedule) > 1 else space.schedule[0]
    return Hyperparams(batch_size, lr, momentum, spec.lr_parameterization.effective_lr(lr, batch_size, momentum), schedule)


def build_sampler(spec: StudySpec, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """TPE by default: Optuna 5 makes it multivariate with a constant liar, which suits a joint
    batch-size/lr/momentum space searched by parallel workers. Each worker gets its own seed
    so that parallel workers do not draw the same start-up points."""
    seed = spec.sampler.seed + worker_index
    if spec.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler.n_startup_trials)
