"""Splitting a batch into micro-batches: how large one may be, which size a trial uses, and
what batch norm computes its statistics over when a batch is split.

The largest micro-batch that fits is found once per (device, model, memory cap) and cached on
disk next to the decoded data, so every worker and every later run reuses it.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from search.config.spec import StudySpec
from search.data.images import cache_dir
from search.data.slicing import Batch, batch_length, repeat_batch, tensors_of
from search.data.source import TrialData
from search.errors import UserError
from search.train.model import build_model, training_step
from search.train.step import TrainingStep

NormalizationBatch = Literal["full"] | int


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(module, _BatchNorm) for module in model.modules())


class GhostBatchNorm(nn.Module):
    """Batch norm over consecutive groups of `size` examples (ghost batch norm, Hoffer et al. 2017).

    The statistics then do not depend on how a batch is split into passes: a pass of 4N examples
    normalizes exactly as four passes of N, running averages included.
    """

    def __init__(self, norm: _BatchNorm, size: int) -> None:
        super().__init__()
        self.norm = norm
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or len(x) <= self.size:
            return self.norm(x)
        return torch.cat([self.norm(group) for group in x.split(self.size)])


def use_ghost_batch_norm(model: nn.Module, size: int) -> nn.Module:
    """Wrap every batch-norm layer of `model` (in place) so it normalizes groups of `size` examples."""
    for name, child in model.named_children():
        if isinstance(child, _BatchNorm):
            setattr(model, name, GhostBatchNorm(child, size))
        else:
            use_ghost_batch_norm(child, size)
    return model


@contextlib.contextmanager
def ghost_groups(model: nn.Module, size: int) -> Iterator[nn.Module]:
    """Within the block, every ghost-batch-norm layer of `model` normalizes groups of `size` examples."""
    layers = [m for m in model.modules() if isinstance(m, GhostBatchNorm)]
    sizes = [layer.size for layer in layers]
    for layer in layers:
        layer.size = size
    try:
        yield model
    finally:
        for layer, original in zip(layers, sizes):
            layer.size = original


@dataclass(frozen=True)
class BatchSplitter:
    """How one worker splits its batches for one study's model: the one place that decides."""

    largest_fitting: int
    batch_norm: bool
    normalization_batch: NormalizationBatch

    @classmethod
    def for_study(cls, spec: StudySpec, data: TrialData, device_name: str) -> BatchSplitter:
        probe = build_model(spec, data)
        step = training_step(spec, probe, data.device)
        example = data.fixed_subset(1, seed=0)
        largest = largest_micro_batch(step, example, device_name, spec.accumulation.memory_cap_mb, max(spec.search_space.batch_sizes()))
        return cls(largest, has_batch_norm(probe), spec.batch_norm.group)

    def micro_batch_size(self, batch_size: int, fastest: int | None = None) -> int | None:
        """The micro-batch a trial trains with; None: the whole batch in one pass.

        `fastest` is the device's fastest micro-batch from a speed profile, when one is known;
        without it the largest size that fits is used. Under `full` normalization a model with
        batch norm is never split (its statistics must cover the whole batch); under ghost batch
        norm the micro-batch is a whole number of normalization groups.
        """
        if self.batch_norm and self.normalization_batch == "full":
            return None
        size = min(fastest or batch_size, self.largest_fitting)
        if self.batch_norm and isinstance(self.normalization_batch, int):
            size = max(self.normalization_batch, size // self.normalization_batch * self.normalization_batch)
        return None if size >= batch_size else size

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model as this study trains it: ghost batch norm when the study asks for it."""
        if self.batch_norm and isinstance(self.normalization_batch, int):
            return use_ghost_batch_norm(model, self.normalization_batch)
        return model


def largest_micro_batch(step: TrainingStep, example: Batch, device_name: str, memory_cap_mb: float | None, limit: int) -> int:
    """The largest power of two up to `limit` whose training pass fits the device (cached).

    `step.model` is a throwaway instance: probing on CUDA runs training passes through it.
    `example` is one training example, repeated to make batches of each size.
    """
    model, device = step.model, step.device
    shapes = [list(t.shape[1:]) for t in tensors_of(example)]
    key = json.dumps([device_name, type(model).__name__, repr(model), shapes, memory_cap_mb, limit])
    path = cache_dir() / "micro_batch.json"
    cached = _read(path)
    if key not in cached:
        cap = None if memory_cap_mb is None else memory_cap_mb * 2**20
        sizes = [2**k for k in range(limit.bit_length()) if 2**k <= limit]
        if device.type == "cuda":
            fitting = list(takewhile(lambda size: _fits_on_cuda(step, repeat_batch(example, size), cap), sizes))
        else:
            fixed, per_example = _estimated_bytes(step, example)
            fitting = [size for size in sizes if cap is None or fixed + per_example * size <= cap]
        if not fitting:
            raise UserError(
                f"Not even one example of model {type(model).__name__} fits in accumulation.memory_cap_mb={memory_cap_mb} "
                f"on {device_name}. Raise the cap (or leave it out) and run again."
            )
        cached = {**_read(path), key: max(fitting)}
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        staging.write_text(json.dumps(cached, indent=1))
        staging.replace(path)  # atomic: concurrent workers never read half a file
    return int(cached[key])


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}




def _estimated_bytes(step: TrainingStep, example: Batch) -> tuple[int, int]:
    """CPU memory of a training pass as fixed + per_example x batch, in bytes (float32).

    Fixed: weights, gradients and momentum. Per example: the input and every leaf layer's
    output, each kept for backward and matched by a gradient of the same size during it. The
    CPU allocator reports no peak, so this estimate stands in for a measurement.
    """
    outputs = 0

    def count(module: nn.Module, inputs: object, output: object) -> None:
        nonlocal outputs
        outputs += sum(t.numel() * 4 for t in tensors_of(output))

    model = step.model
    leaves = [module for module in model.modules() if not list(module.children())]
    handles = [leaf.register_forward_hook(count) for leaf in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            step.loss_of(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    parameters = sum(p.numel() * 4 for p in model.parameters())
    inputs = sum(t.numel() * 4 for t in tensors_of(example))
    return 3 * parameters, 2 * (outputs + inputs)


def _fits_on_cuda(step: TrainingStep, batch: Batch, cap: float | None) -> bool:
    """Try one forward/backward pass of the batch; out of memory (or above `cap`) means no."""
    device = step.device
    step.model.to(device)
    try:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step.accumulate(batch, None, batch_length(batch))
        return cap is None or torch.cuda.max_memory_allocated(device) - before <= cap
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        step.model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
