"""The optimizer a trial trains with (SGD with momentum, or AdamW with the momentum as beta1), and the one optimizer step."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from search.config.spec import OptimizerSpec, ScheduleSpec
from search.data.slicing import Batch, batch_length
from search.train.plan import TrainingPlan, lr_factor
from search.train.step import Backward, TrainingStep


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


class OptimizerStep:
    """The one optimizer step: every run (a trial, `search.evaluate`, the probe, the speed profile) updates
    its weights through this class, so they all train with the same optimizer, learning-rate schedule and
    gradient accumulation.

    `add(batch)` runs forward and backward and, once the batches added since the last step hold the step's
    examples (one loader batch, or several under the `grow_batch` schedule), applies the optimizer and the
    schedule. The summed gradient is always the exact mean over the step's examples (`TrainingStep.accumulate`).
    """

    def __init__(self, step: TrainingStep, plan: TrainingPlan, optimizer: OptimizerSpec, schedule: ScheduleSpec) -> None:
        self.step = step
        self.plan = plan
        self.optimizer = build_optimizer(step.model.parameters(), optimizer, plan.effective_lr, plan.momentum)
        # A growing batch replaces the decay: warm-up over the same examples, then a fixed rate.
        schedule = schedule.model_copy(update={"decay": "constant"}) if plan.growth else schedule
        steps = plan.schedule_steps()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda index: lr_factor(index, steps, plan.batch_size, schedule))
        self.examples_drawn = 0
        self._step_size = plan.batch_size
        self._accumulated = 0  # examples whose gradients await the next optimizer step

    def add(self, batch: Batch, batch_idx: int = 0, backward: Backward | None = None, optimizer: Any = None) -> torch.Tensor:
        """Forward and backward through `batch`, then the update when the step is complete; returns the batch's
        summed loss (detached, on the device). Lightning passes its own `backward` and its wrapper of `optimizer`
        (which counts `global_step`); elsewhere both are plain torch."""
        optimizer = optimizer or self.optimizer
        if self._accumulated == 0:
            self._step_size = self.plan.batch_size * self.plan.multiplier_at(self.examples_drawn)
            optimizer.zero_grad(set_to_none=True)
        loss_sum = self.step.accumulate(batch, self.plan.micro_batch_size, self._step_size, backward, batch_idx)
        examples = batch_length(batch)
        self.examples_drawn += examples
        self._accumulated += examples
        if self._accumulated == self._step_size:
            optimizer.step()
            self.scheduler.step()
            self._accumulated = 0
        return loss_sum
