"""Sharpness and generalization gap of a trained network (Keskar et al. 2016, arXiv 1609.04836).

Large batches are said to end in sharper minima that generalize worse. Both halves of that
claim are measured here, on the final weights of a trial:

* sharpness: the largest Hessian eigenvalue of the training loss, by power iteration on
  Hessian-vector products over a fixed training subset with a set number of iterations;
* generalization gap: validation loss minus the loss on a fixed training subset.

The network is in eval mode throughout: batch norm then uses its running statistics, so the
loss is the function the trained network computes (the one validation measures), and the
measurement changes nothing in the model. The loss is the training step's (the study's loss, or a
LightningModule's training_step) in float32, without the weight
decay term (which would add the decay, 5e-4, to every eigenvalue).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from search.config.spec import DiagnosticsSpec
from search.data.slicing import Batch, batch_length, split_batch
from search.data.source import TrialData
from search.train.step import TrainingStep


class TooSlow(Exception):
    """The power iteration would overrun its time limit; raised after the first iteration."""


@dataclass(frozen=True)
class Eigenvalue:
    value: float  # Rayleigh quotient of the last iterate
    iterations: int
    # |change of the estimate in the last iteration| / |estimate|: how far from converged.
    last_change: float


def top_hessian_eigenvalue(
    loss: torch.Tensor, params: Sequence[torch.Tensor], iterations: int, seed: int = 0, time_limit: float = math.inf
) -> Eigenvalue:
    """The Hessian eigenvalue of `loss` largest in magnitude (the largest one at a minimum).

    The gradient graph is built once and every iteration reuses it, so an iteration costs
    one double backward pass. When the next iteration would end past `time_limit` seconds
    (judged by the last one), it raises `TooSlow` rather than overrun.
    """
    started = time.perf_counter()
    gradient = torch.autograd.grad(loss, params, create_graph=True)
    generator = torch.Generator(device=params[0].device).manual_seed(seed)
    vector = [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]
    vector = _normalized(vector)
    estimate, previous = math.nan, math.nan
    for iteration in range(1, iterations + 1):
        iteration_started = time.perf_counter()
        product = torch.autograd.grad(gradient, params, grad_outputs=vector, retain_graph=iteration < iterations)
        previous, estimate = estimate, sum(float((v * h).sum()) for v, h in zip(vector, product))
        vector = _normalized(list(product))
        now = time.perf_counter()
        if iteration < iterations and now - started + (now - iteration_started) > time_limit:
            raise TooSlow(f"stopped after {iteration} of {iterations} Hessian-vector products ({now - started:.1f} s)")
    change = abs(estimate - previous) / abs(estimate) if iterations > 1 and estimate else math.nan
    return Eigenvalue(estimate, iterations, change)


def _normalized(vector: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = torch.sqrt(sum((v * v).sum() for v in vector))
    return [v / norm for v in vector]


def subset_loss(step: TrainingStep, batch: Batch, chunk: int = 1024) -> float:
    """Mean training loss of the model in eval mode over `batch`, computed in chunks."""
    step.model.eval()
    with torch.no_grad():
        total = sum(float(step.loss_of(piece)) * batch_length(piece) for piece in split_batch(batch, chunk))
    return total / batch_length(batch)


def sharpness(step: TrainingStep, batch: Batch, iterations: int, seed: int = 0, time_limit: float = math.inf) -> Eigenvalue:
    """The top Hessian eigenvalue of the eval-mode training loss over `batch`."""
    step.model.eval()
    params = [p for p in step.model.parameters() if p.requires_grad]
    return top_hessian_eigenvalue(step.loss_of(batch), params, iterations, seed, time_limit)


def diagnose(trained: TrainingStep, data: TrialData, val_loss: float, spec: DiagnosticsSpec, train_seconds: float) -> dict[str, Any]:
    """The trial attributes: sharpness, training-subset loss, generalization gap, their cost.

    The time limit is `spec.max_fraction` of the trial's training time; when the Hessian part
    would overrun it, the gap is still stored and `diagnostics_skipped` says why.
    """
    started = time.perf_counter()
    limit = spec.max_fraction * train_seconds
    model = trained.model.to(data.device)  # Lightning hands a GPU-trained model back on the CPU
    # Float32 throughout: Hessian-vector products in bf16 would be mostly rounding.
    step = TrainingStep(model, trained.loss, data.device, autocast=False)
    subset = data.fixed_subset(spec.loss_examples, spec.seed)
    train_loss = subset_loss(step, subset)
    attrs: dict[str, Any] = {"train_subset_loss": train_loss, "generalization_gap": val_loss - train_loss}
    # The Hessian subset is the head of the loss subset: the same images for every trial.
    head = split_batch(subset, spec.examples)[0]
    try:
        top = sharpness(step, head, spec.iterations, spec.seed, time_limit=limit - (time.perf_counter() - started))
        attrs.update(sharpness=top.value, sharpness_change=top.last_change)
    except TooSlow as error:
        attrs["diagnostics_skipped"] = f"{error}: the next would pass {spec.max_fraction:.0%} of the trial's {train_seconds:.1f} s of training"
    finally:
        model.zero_grad(set_to_none=True)
    attrs["diagnostics_seconds"] = time.perf_counter() - started
    return attrs
