"""The optimizer a trial trains with: SGD with momentum, or AdamW with the momentum as beta1."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from search.config.spec import OptimizerSpec


def parameter_groups(parameters: Iterable[torch.nn.Parameter], spec: OptimizerSpec) -> list[dict[str, Any]]:
    """Weight decay on the weights only: biases and normalization scales/shifts (one dimension or none) get none,
    unless `decay_norm_and_bias`. Decaying them changes their effective learning rate differently per batch size."""
    parameters = list(parameters)
    if spec.decay_norm_and_bias:
        return [{"params": parameters, "weight_decay": spec.weight_decay}]
    weights = [p for p in parameters if p.ndim > 1]
    others = [p for p in parameters if p.ndim <= 1]
    return [group for group in ({"params": weights, "weight_decay": spec.weight_decay}, {"params": others, "weight_decay": 0.0}) if group["params"]]


def build_optimizer(parameters: Iterable[torch.nn.Parameter], spec: OptimizerSpec, lr: float, momentum: float) -> torch.optim.Optimizer:
    groups = parameter_groups(parameters, spec)
    if spec.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, spec.beta2), eps=spec.eps)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=spec.nesterov and momentum > 0)
