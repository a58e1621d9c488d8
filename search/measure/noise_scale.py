"""The gradient noise scale (McCandlish et al. 2018, arXiv 1812.06162): the largest useful batch size.

With G the true gradient and Sigma the per-example gradient covariance, the simple noise
scale B_simple = tr(Sigma) / |G|^2 predicts the critical batch size: below it a larger batch
cuts the steps needed almost proportionally, above it mostly wastes examples. Neither term can
be measured directly, but the squared norm of a batch gradient has expectation
E|G_B|^2 = |G|^2 + tr(Sigma) / B, so norms at two batch sizes give unbiased estimates of both
(Appendix A). Numerator and denominator are averaged over many batches before dividing: a
ratio of noisy estimates per batch would be biased.

Each big batch is split into small chunks: the chunks' gradients give the small-batch norms,
their mean is the big-batch gradient, so one pass over the big batch yields both.

The estimator needs the chunks' gradients to be means of independent units. Without batch norm
(or any layer that mixes examples) the unit is the example, and any chunk size gives the same
answer. With batch norm in train mode a chunk normalizes itself, so the unit would become the
chunk and the estimate would move with the chunk size; `search.measure.probe` therefore measures
with batch norm over fixed ghost groups (Hoffer et al. 2017) no larger than the smallest batch size
a trial trains with, each group an independent unit whatever the chunk.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from search.data.slicing import Batch, batch_length, split_batch
from search.train.step import TrainingStep


@dataclass(frozen=True)
class NoiseScale:
    """Unbiased estimates of |G|^2 and tr(Sigma) from `measurements` big batches."""

    small_batch: int
    big_batch: int
    measurements: int
    gradient_sq: float  # |G|^2
    trace: float  # tr(Sigma), per example
    stderr: float  # jackknife standard error of b_simple over the big batches (nan with one)
    loss: float  # the mean training loss over the measured batches (model as the caller left it)

    @property
    def b_simple(self) -> float:
        """tr(Sigma) / |G|^2; nan when the |G|^2 estimate is not positive (noise swamps the signal)."""
        return self.trace / self.gradient_sq if self.gradient_sq > 0 else math.nan


def unbiased_estimates(small_sq: float, big_sq: float, small_batch: int, big_batch: int) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) from mean squared gradient norms at two batch sizes (McCandlish et al., eqs. A.2, A.3)."""
    gradient_sq = (big_batch * big_sq - small_batch * small_sq) / (big_batch - small_batch)
    trace = (small_sq - big_sq) / (1 / small_batch - 1 / big_batch)
    return gradient_sq, trace


def gradient_norms(step: TrainingStep, batch: Batch, small_batch: int) -> tuple[float, float, float]:
    """(mean |G_small|^2 over the chunks, |G_big|^2, mean loss) for one big batch split into chunks of `small_batch`."""
    params = [p for p in step.model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    small_sq = loss_sum = 0.0
    chunks = split_batch(batch, small_batch)
    for chunk in chunks:
        loss = step.loss_of(chunk)
        gradient = torch.autograd.grad(loss, params)
        loss_sum += float(loss.detach())
        small_sq += float(sum((g.double() ** 2).sum() for g in gradient))
        for accumulated, g in zip(total, gradient):
            accumulated += g
    big_sq = float(sum(((t / len(chunks)).double() ** 2).sum() for t in total))
    return small_sq / len(chunks), big_sq, loss_sum / len(chunks)


def estimate(step: TrainingStep, batches: Iterable[Batch], small_batch: int, measurements: int) -> NoiseScale:
    """Average the two norms over `measurements` big batches from `batches`, then estimate.

    The big batch size is that of the batches, a multiple of `small_batch`. The model is used
    in whatever mode the caller left it, through the study's training step (train mode: batch norm sees chunks of `small_batch`).
    """
    small, big, losses = [], [], []
    big_batch = 0
    for _, batch in zip(range(measurements), batches):
        big_batch = batch_length(batch)
        if big_batch % small_batch or big_batch == small_batch:
            raise ValueError(f"the big batch ({big_batch}) must be a larger multiple of the small batch ({small_batch})")
        small_sq, big_sq, loss = gradient_norms(step, batch, small_batch)
        small.append(small_sq)
        big.append(big_sq)
        losses.append(loss)
    gradient_sq, trace = unbiased_estimates(_mean(small), _mean(big), small_batch, big_batch)
    return NoiseScale(small_batch, big_batch, len(small), gradient_sq, trace, _jackknife(small, big, small_batch, big_batch), _mean(losses))


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _jackknife(small: list[float], big: list[float], small_batch: int, big_batch: int) -> float:
    """Standard error of B_simple, leaving out one big batch at a time."""
    n = len(small)
    if n < 2:
        return math.nan
    total_small, total_big = math.fsum(small), math.fsum(big)
    leave_one_out = []
    for s, b in zip(small, big):
        gradient_sq, trace = unbiased_estimates((total_small - s) / (n - 1), (total_big - b) / (n - 1), small_batch, big_batch)
        leave_one_out.append(trace / gradient_sq if gradient_sq > 0 else math.inf)
    if not all(math.isfinite(v) for v in leave_one_out):
        return math.inf
    centre = _mean(leave_one_out)
    return math.sqrt((n - 1) / n * math.fsum((v - centre) ** 2 for v in leave_one_out))
