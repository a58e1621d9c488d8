"""Batch-norm statistics recomputed before each validation, from the same training images for every trial.

Validation normalizes with running averages that training updates with a momentum: at airbench's
0.4 they come from the last ~2.5 batches, 40 images at B=16 against 5,000 at B=2048, so small
batches would be validated with noisier statistics than large ones, a bias against them that has
nothing to do with the weights they learned. Before each validation the running statistics are
reset and recomputed as a cumulative average (momentum None, as `torch.optim.swa_utils.update_bn`)
over a fixed training subset, in train-mode forward passes of `recalibrate_batch` examples.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from search.config.spec import BatchNormSpec
from search.data.slicing import Batch, batch_length, split_batch
from search.data.source import TrialData
from search.train.step import TrainingStep

SUBSET_SEED = 0  # the same images for every trial, worker and study


def running_norms(model: nn.Module) -> list[_BatchNorm]:
    """The batch-norm layers that keep running statistics (ghost batch norm's inner layers included)."""
    return [module for module in model.modules() if isinstance(module, _BatchNorm) and module.track_running_stats]


def recalibrate(step: TrainingStep, subset: Batch, chunk: int) -> None:
    """Recompute every running batch-norm statistic of `step.model` from scratch over `subset`.

    The forward passes are the step's own (a LightningModule's `training_step`, its logging silenced:
    these passes are not training), without gradients, in chunks of at most `chunk` examples, all of
    nearly one size (each weighs alike in the average, none too small to normalize). Momenta and every
    module's mode are restored afterwards.
    """
    model = step.model
    norms = running_norms(model)
    if not norms:
        return
    momenta = {norm: norm.momentum for norm in norms}
    modes = {module: module.training for module in model.modules()}
    examples = batch_length(subset)
    size = -(-examples // -(-examples // chunk))
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
        model.train()
        with torch.no_grad(), _silenced(model) if step.lightning else contextlib.nullcontext():
            for piece in split_batch(subset, size):
                step.loss_of(piece)
    finally:
        for norm, momentum in momenta.items():
            norm.momentum = momentum
        for module, training in modes.items():
            module.training = training


@contextlib.contextmanager
def _silenced(model: nn.Module) -> Iterator[None]:
    """A LightningModule's `self.log` and `self.log_dict` do nothing inside (the validation's metrics stay its own)."""
    model.log = model.log_dict = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del model.log, model.log_dict


class Recalibration:
    """One worker's recalibration: the subset is drawn at the first model with batch norm and kept for its
    later trials; models without batch norm cost nothing. `recalibrate_examples: 0` turns it off."""

    def __init__(self, data: TrialData, spec: BatchNormSpec) -> None:
        self.data = data
        self.spec = spec
        self._subset: Batch | None = None

    def __call__(self, step: TrainingStep) -> None:
        if self.spec.recalibrate_examples == 0 or not running_norms(step.model):
            return
        if self._subset is None:
            self._subset = self.data.fixed_subset(self.spec.recalibrate_examples, SUBSET_SEED)
        recalibrate(step, self._subset, self.spec.recalibrate_batch)
