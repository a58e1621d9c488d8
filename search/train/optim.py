"""The optimizer a trial trains with: SGD with momentum, or AdamW with the momentum as beta1."""
from __future__ import annotations

from collections.abc import Iterable

import torch

from search.config.spec import OptimizerSpec


def build_optimizer(parameters: Iterable[torch.nn.Parameter], spec: OptimizerSpec, lr: float, momentum: float) -> torch.optim.Optimizer:
    if spec.name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, betas=(momentum, spec.beta2), eps=spec.eps, weight_decay=spec.weight_decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, nesterov=spec.nesterov and momentum > 0, weight_decay=spec.weight_decay)
