"""Sharpness and generalization gap of a trained network (Keskar et al. 2016, arXiv 1609.04836).

Large batches are said to end in sharper minima that generalize worse. Both halves of that
claim are measured here, on the final weights of a trial:

* sharpness: the largest Hessian eigenvalue of the training loss, by power iteration on
  Hessian-vector products over a fixed training subset with a set number of iterations;
* generalization gap: validation loss minus the loss on a fixed training subset.

The network is in eval mode throughout: batch norm then uses its running statistics, so the
loss is the function the trained network computes (the one validation measures), and the
measurement changes nothing in the model. The loss is plain cross-entropy, without the weight
decay term (which would add the decay, 5e-4, to every eigenvalue).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search.batches import DeviceData
from search.spec import DiagnosticsSpec


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


def training_subset(data: DeviceData, examples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same `examples` training images for every trial (seeded), normalized, not augmented."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data.train_labels), generator=generator)[:examples].to(data.device)
    images = data.normalize(data.train_images[index]).contiguous(memory_format=data.memory_format)
    return images, data.train_labels[index]


def subset_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> float:
    """Mean cross-entropy of the model in eval mode, computed in chunks."""
    model.eval()
    with torch.no_grad():
        total = sum(float(F.cross_entropy(model(x), y, reduction="sum")) for x, y in zip(images.split(chunk), labels.split(chunk)))
    return total / len(labels)


def sharpness(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, iterations: int, seed: int = 0, time_limit: float = math.inf) -> Eigenvalue:
    """The top Hessian eigenvalue of the eval-mode cross-entropy over (images, labels)."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    return top_hessian_eigenvalue(F.cross_entropy(model(images), labels), params, iterations, seed, time_limit)


def diagnose(model: nn.Module, data: DeviceData, val_loss: float, spec: DiagnosticsSpec, train_seconds: float) -> dict[str, Any]:
    """The trial attributes: sharpness, training-subset loss, generalization gap, their cost.

    The time limit is `spec.max_fraction` of the trial's training time; when the Hessian part
    would overrun it, the gap is still stored and `diagnostics_skipped` says why.
    """
    started = time.perf_counter()
    limit = spec.max_fraction * train_seconds
    model.to(data.device)  # Lightning hands a GPU-trained model back on the CPU
    train_images, train_labels = training_subset(data, spec.loss_examples, spec.seed)
    train_loss = subset_loss(model, train_images, train_labels)
    attrs: dict[str, Any] = {"train_subset_loss": train_loss, "generalization_gap": val_loss - train_loss}
    # The Hessian subset is the head of the loss subset: the same images for every trial.
    images, labels = train_images[: spec.examples], train_labels[: spec.examples]
    try:
        top = sharpness(model, images, labels, spec.iterations, spec.seed, time_limit=limit - (time.perf_counter() - started))
        attrs.update(sharpness=top.value, sharpness_change=top.last_change)
    except TooSlow as error:
        attrs["diagnostics_skipped"] = f"{error}: the next would pass {spec.max_fraction:.0%} of the trial's {train_seconds:.1f} s of training"
    finally:
        model.zero_grad(set_to_none=True)
    attrs["diagnostics_seconds"] = time.perf_counter() - started
    return attrs
