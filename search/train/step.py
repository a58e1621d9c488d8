"""The training step: the one place that turns a batch into a loss and a gradient.

Trials, the speed profile, the noise-scale probe, sharpness and the throughput benchmark all
call it, so what they measure is what trials train: the same forward pass (the model, or a
LightningModule's own `training_step`), the same loss, the same micro-batching and the same
precision (bf16 autocast on a GPU that supports it, float32 elsewhere).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from search.data.slicing import Batch, batch_length, split_batch
from search.train.loss import Loss

# A LightningModule's `self.log` outside a Trainer (the profile, the probe, the checks) is a no-op.
warnings.filterwarnings("ignore", message=".*self.log\\(\\)` but the `self.trainer` reference is not registered.*")

Backward = Callable[[torch.Tensor], Any]


def _default_autocast(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


class TrainingStep:
    """Forward, loss and backward for one model on one device.

    `loss` is None for a LightningModule: its `training_step(batch, batch_idx)` returns the
    loss (a tensor, or a dict with "loss"). `autocast=False` forces float32 (second-order
    measurements need it); the default follows the device, as in training.
    """

    def __init__(self, model: nn.Module, loss: Loss | None, device: torch.device, autocast: bool | None = None) -> None:
        self.model = model
        self.loss = loss
        self.device = device
        self.lightning = isinstance(model, pl.LightningModule)
        self.autocast = _default_autocast(device) if autocast is None else autocast
        if not self.lightning and loss is None:
            raise ValueError("an nn.Module model needs a loss")

    @property
    def classifies(self) -> bool:
        return self.loss is not None and self.loss.correct is not None

    def precision(self) -> contextlib.AbstractContextManager[None]:
        """bf16 autocast where the step uses it; otherwise nothing at all (entering a disabled autocast costs time each step)."""
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def loss_of(self, batch: Batch, batch_idx: int = 0) -> torch.Tensor:
        """The mean loss of a batch, in float32, with the graph for backward."""
        with self.precision():
            if self.lightning:
                output = self.model.training_step(batch, batch_idx)  # type: ignore[operator]
                loss = output.get("loss") if isinstance(output, Mapping) else output
                if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                    raise TypeError(
                        f"{type(self.model).__name__}.training_step must return the loss (a scalar tensor, or a dict with 'loss'), "
                        f"not {type(output).__name__}"
                    )
            else:
                inputs, targets = batch
                loss = self.loss(self.model(inputs), targets)  # type: ignore[misc]
        return loss.float()

    def accumulate(self, batch: Batch, micro_batch_size: int | None, step_size: int, backward: Backward | None = None, batch_idx: int = 0) -> torch.Tensor:
        """Backward through every micro-batch of `batch`, each weighted by its share of the
        optimizer step's `step_size` examples, so the summed gradient is the step's mean
        gradient. Returns the batch's summed loss, detached and left on the device (no sync)."""
        backward = backward or torch.Tensor.backward
        examples = batch_length(batch)
        if micro_batch_size is None or micro_batch_size >= examples:  # one pass: the common case, kept lean
            loss = self.loss_of(batch, batch_idx)
            backward(loss if examples == step_size else loss * (examples / step_size))
            return loss.detach() * examples
        total = torch.zeros((), device=self.device)
        for piece in split_batch(batch, micro_batch_size):
            examples = batch_length(piece)
            loss = self.loss_of(piece, batch_idx)
            backward(loss * (examples / step_size))
            total = total + loss.detach() * examples
        return total

    def evaluate(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(summed loss, correct examples or None) of an nn.Module model in its current mode, without gradients."""
        inputs, targets = batch
        with torch.no_grad(), self.precision():
            outputs = self.model(inputs)
            assert self.loss is not None
            examples = batch_length(batch)
            loss_sum = self.loss(outputs, targets) * examples
            correct = self.loss.correct(outputs.float(), targets) if self.loss.correct else None
        return loss_sum, correct
