"""Pruners on validation loss, with every step-valued argument in examples seen.

Trials report at `step = examples seen`, so warm-up and resources are counted in examples:
a batch-16 and a batch-1024 trial are compared after the same number of training examples.
In a frontier study the first rung defaults to `FRONTIER_FIRST_RUNG` of the budget (spec.py says why).
With a time budget (`budget_seconds`) they report at `step = milliseconds of predicted
training time` instead, and the same arguments count milliseconds.
"""
from __future__ import annotations

from typing import Callable

import optuna

from search.config.spec import StudySpec
from search.errors import UserError
from search.study.per_batch_size import WithinBatchSizePruner


def _median(spec: StudySpec, n_startup_trials: int = 5, n_warmup_examples: int | None = None, n_min_trials: int = 1) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials, _warmup(spec, n_warmup_examples), interval_steps=1, n_min_trials=n_min_trials)


def _percentile(
    spec: StudySpec, percentile: float = 25.0, n_startup_trials: int = 5, n_warmup_examples: int | None = None, n_min_trials: int = 1
) -> optuna.pruners.BasePruner:
    return optuna.pruners.PercentilePruner(percentile, n_startup_trials, _warmup(spec, n_warmup_examples), interval_steps=1, n_min_trials=n_min_trials)


def _warmup(spec: StudySpec, n_warmup_examples: int | None) -> int:
    """The examples before the first prune: as given, else none (a frontier study: from its first trusted rung)."""
    if n_warmup_examples is not None:
        return n_warmup_examples
    return spec.first_pruning_step() if spec.strategy == "frontier" else 0


def _hyperband(
    spec: StudySpec, min_resource_examples: int | None = None, reduction_factor: int = 3, bootstrap_count: int = 0
) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(
        min_resource=min_resource_examples or spec.first_pruning_step(),
        max_resource=spec.pruning_resources()[1],
        reduction_factor=reduction_factor,
        bootstrap_count=bootstrap_count,
    )


def _successive_halving(
    spec: StudySpec, min_resource_examples: int | None = None, reduction_factor: int = 3, min_early_stopping_rate: int = 0
) -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=min_resource_examples or spec.first_pruning_step(),
        reduction_factor=reduction_factor,
        min_early_stopping_rate=min_early_stopping_rate,
    )


_FACTORIES: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "none": lambda spec: optuna.pruners.NopPruner(),
    "median": _median,
    "percentile": _percentile,
    "hyperband": _hyperband,
    "successive_halving": _successive_halving,
}


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner, tried once on made-up trials: an argument Optuna accepts but fails on at the first prune
    (Hyperband's `reduction_factor: 1` divides by zero there) is refused now, before the study exists."""
    name, args = spec.pruner.name, dict(spec.pruner.args)
    try:
        pruner = _FACTORIES[name](spec, **args)
        _dry_run(pruner, spec)
    except (TypeError, ValueError, ZeroDivisionError, ArithmeticError, IndexError, KeyError) as error:
        raise UserError(
            f"pruner '{name}' cannot run with arguments {dict(sorted(args.items())[:10])}: {type(error).__name__}: {str(error)[:200]}. "
            "Fix pruner.args (e.g. reduction_factor at least 2; step-valued arguments are in examples seen: n_warmup_examples, "
            "min_resource_examples); docs/usage.md lists each pruner's arguments."
        ) from None
    return WithinBatchSizePruner(pruner) if spec.strategy == "frontier" else pruner


def _dry_run(pruner: optuna.pruners.BasePruner, spec: StudySpec) -> None:
    """Six made-up trials reporting at the study's checkpoints, each asking the pruner (in memory, nothing stored)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.create_study(pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))
        last = max(spec.pruning_resources()[1], 1)
        steps = sorted({max(1, last * k // 4) for k in range(1, 5)})
        for number in range(6):
            trial = study.ask()
            for step in steps:
                trial.report(1.0 + number / 10 + 1.0 / step, step)
                if trial.should_prune():
                    break
            study.tell(trial, 1.0 + number / 10)
    finally:
        optuna.logging.set_verbosity(verbosity)

