"""The loss an nn.Module model is trained on, and whether it has an accuracy worth recording.

A LightningModule computes its own loss in `training_step`; every other model gets this one.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from search.config.classpath import instantiate
from search.config.spec import CodeSpec, StudySpec

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _fit_targets(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N,) targets against (N, 1) outputs: reshape rather than broadcast to (N, N). Any other
    mismatch is an error: F.mse_loss would broadcast it with only a warning, so a model with the
    wrong number of outputs would pass the two-example check and fail (or silently mistrain) later."""
    if targets.shape != outputs.shape and targets.numel() == outputs.numel():
        targets = targets.reshape(outputs.shape)
    if targets.shape != outputs.shape:
        raise ValueError(
            f"the model's outputs have shape {tuple(outputs.shape)} but the targets {tuple(targets.shape)}; "
            "this loss needs one output per target value"
        )
    return targets.to(outputs.dtype)


def _class_scores(outputs: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) scores with C >= 2: with one output cross-entropy is 0 whatever the model does."""
    if outputs.dim() < 2 or outputs.shape[1] < 2:
        raise ValueError(f"the model's outputs have shape {tuple(outputs.shape)}; cross_entropy needs one score per class, (batch, classes >= 2)")
    return outputs.float()


def _multiclass_correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.argmax(1) == targets).float().sum()


def _binary_correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per example: every output's sign agrees with its 0/1 target (all labels right, for multi-label)."""
    agree = (outputs > 0) == (_fit_targets(outputs, targets) > 0.5)
    return agree.reshape(len(outputs), -1).all(1).float().sum()


@dataclass(frozen=True)
class Loss:
    """Mean loss over a batch, and the count of correct examples when the loss classifies."""

    name: str
    mean: LossFn
    correct: LossFn | None = None  # None: not a classification loss, no accuracy is recorded

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.mean(outputs, targets)


def build_loss(spec: StudySpec) -> Loss:
    if isinstance(spec.loss, CodeSpec):
        function = instantiate(spec.loss, spec.code_dir, role="loss")
        return Loss(spec.loss.class_path, function)
    if spec.loss == "cross_entropy":
        smoothing = spec.optimizer.label_smoothing
        return Loss("cross_entropy", lambda out, y: F.cross_entropy(_class_scores(out), y, label_smoothing=smoothing), _multiclass_correct)
    if spec.loss == "bce_with_logits":
        return Loss("bce_with_logits", lambda out, y: F.binary_cross_entropy_with_logits(out.float(), _fit_targets(out.float(), y)), _binary_correct)
    return Loss("mse", lambda out, y: F.mse_loss(out.float(), _fit_targets(out.float(), y)))
