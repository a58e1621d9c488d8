"""The search space: what a trial samples and the learning rate it hands to the optimizer."""
from __future__ import annotations

import math
from dataclasses import dataclass

import optuna

from search.spec import LRParameterizationSpec, StudySpec


@dataclass(frozen=True)
class Hyperparams:
    batch_size: int
    lr: float  # as sampled, in the study's parameterization
    momentum: float
    effective_lr: float  # what the optimizer gets
    schedule: str  # decay_lr | grow_batch


def effective_lr(lr: float, batch_size: int, momentum: float, parameterization: LRParameterizationSpec) -> float:
    ratio = batch_size / parameterization.reference_batch_size
    scale = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[parameterization.scaling]
    decoupling = (1 - momentum) if parameterization.momentum_decoupled else 1.0
    return lr * scale * decoupling


def sample(trial: optuna.Trial, spec: StudySpec) -> Hyperparams:
    """Sample batch size, learning rate and momentum jointly (TPE models them together)."""
    space = spec.search_space
    batch_size = int(trial.suggest_categorical("batch_size", space.batch_sizes()))
    lr = trial.suggest_float("lr", space.lr.low, space.lr.high, log=space.lr.log)
    momentum = trial.suggest_float("momentum", space.momentum.low, space.momentum.high, log=space.momentum.log)
    # A single listed schedule is fixed, not a parameter: studies without the choice keep their parameters.
    schedule = str(trial.suggest_categorical("schedule", space.schedule)) if len(space.schedule) > 1 else space.schedule[0]
    return Hyperparams(batch_size, lr, momentum, effective_lr(lr, batch_size, momentum, spec.lr_parameterization), schedule)


def build_sampler(spec: StudySpec, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """TPE by default: Optuna 5 makes it multivariate with a constant liar, which suits a joint
    batch-size/lr/momentum space searched by parallel workers. Each worker gets its own seed
    so that parallel workers do not draw the same start-up points."""
    seed = spec.sampler.seed + worker_index
    if spec.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler.n_startup_trials)
