"""Batches of any structure (a tensor, a tuple or list of them, a dict of them): their length,
micro-batches of them, and moving them to a device.

The built-in images come as (images, labels); users' datasets and DataModules collate into
whatever they like. Every tensor of a batch has the examples along its first dimension.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Batch = Any  # a tensor, or a (nested) tuple, list or dict of tensors and other values


def _map(batch: Batch, function: Callable[[torch.Tensor], Any]) -> Batch:
    if isinstance(batch, torch.Tensor):
        return function(batch)
    if isinstance(batch, dict):
        return {key: _map(value, function) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_map(value, function) for value in batch)
    return batch


def tensors_of(batch: Batch) -> list[torch.Tensor]:
    """Every tensor of the batch, in order."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else ()
    return [tensor for value in values for tensor in tensors_of(value)]


def _first_tensor(batch: Batch) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else ()
    return next((found for found in map(_first_tensor, values) if found is not None), None)


def batch_length(batch: Batch) -> int:
    """Examples in the batch: the first dimension of its first tensor (on the training step's path: kept cheap)."""
    first = _first_tensor(batch)
    if first is None or first.dim() == 0:
        raise ValueError("a batch must hold at least one tensor with the examples along its first dimension")
    return len(first)


def split_batch(batch: Batch, size: int | None) -> list[Batch]:
    """Consecutive micro-batches of at most `size` examples (the whole batch when size is None)."""
    length = batch_length(batch)
    if size is None or size >= length:
        return [batch]
    return [_map(batch, lambda tensor, start=start: tensor[start : start + size]) for start in range(0, length, size)]


def to_device(batch: Batch, device: torch.device) -> Batch:
    return _map(batch, lambda tensor: tensor.to(device, non_blocking=True))


def repeat_batch(batch: Batch, length: int) -> Batch:
    """A batch of `length` examples made by repeating `batch`'s: for memory probes at any size."""
    count = -(-length // batch_length(batch))
    return _map(batch, lambda tensor: tensor.repeat(count, *([1] * (tensor.dim() - 1)))[:length])
