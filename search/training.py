"""One trial's training run: a Lightning module trained for `budget // batch_size` steps.

Validation falls every `report_every_examples` examples (a multiple of every batch size),
so all trials are measured at the same examples-seen checkpoints, plus once at the end.

Each optimizer step sums the gradients of micro-batches (when the plan has one) and, under the
`grow_batch` schedule, of several consecutive loader batches: every step applies the exact
mean gradient over its whole batch, whatever pieces it was computed in.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from search.batches import DeviceData
from search.space import Hyperparams
from search.spec import OptimizerSpec, ScheduleSpec, StudySpec

for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Our batches come from an endless on-device iterable: Lightning's DataLoader advice does not apply.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


class Interrupted(Exception):
    """Raised between batches on SIGINT/SIGTERM: leaves `fit` at once, with no extra validation."""


@dataclass(frozen=True)
class TrainingPlan:
    batch_size: int  # examples per loader batch: the batch size, or the starting one when it grows
    steps: int  # optimizer steps
    effective_lr: float
    momentum: float
    report_every_examples: int
    seed: int
    micro_batch_size: int | None = None  # forward/backward passes of this many examples; None: the whole batch
    # (examples seen, multiplier): from that point on a step takes `multiplier` loader batches.
    growth: tuple[tuple[int, int], ...] = ()

    def multiplier_at(self, examples_seen: int) -> int:
        multiplier = 1
        for start, factor in self.growth:
            if examples_seen >= start:
                multiplier = factor
        return multiplier

    def examples_after(self, steps: int) -> int:
        """Examples seen after `steps` optimizer steps (steps x batch size while the batch is constant)."""
        examples = 0
        for phase_end in (*(at for at, _ in self.growth), None):
            step_size = self.batch_size * self.multiplier_at(examples)
            phase_steps = steps if phase_end is None else min(steps, (phase_end - examples) // step_size)
            examples += phase_steps * step_size
            steps -= phase_steps
        return examples


@dataclass(frozen=True)
class Checkpoint:
    examples_seen: int
    train_loss: float
    val_loss: float
    val_acc: float


@dataclass
class TrainingLog:
    """What the run produced; filled in by the module and the reporter as training goes."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    stop_reason: str | None = None  # "pruned" or "diverged" when stopped early
    validation_seconds: float = 0.0


def lr_factor(step: int, steps: int, schedule: ScheduleSpec) -> float:
    """Warm-up then decay, both over this trial's own step count, reaching zero at the end."""
    warmup = round(schedule.warmup_fraction * steps)
    if step < warmup:
        return (step + 1) / warmup
    if schedule.decay == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    if schedule.decay == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def batch_growth(batch_size: int, budget_examples: int, align: int, schedule: ScheduleSpec) -> tuple[tuple[int, int], ...]:
    """The `grow_batch` schedule (Smith et al. 2017): where the decay would divide the learning
    rate by growth_factor^k, multiply the batch size by it instead (at most `max_growths` times).

    Growth points are rounded to the nearest validation checkpoint (multiples of `align`) and
    growth stops at the largest batch that divides `align`, so that checkpoints still fall on
    step boundaries at equal examples seen.
    """
    steps = budget_examples // batch_size
    warmup = round(schedule.warmup_fraction * steps)
    growth: list[tuple[int, int]] = []
    for k in range(1, schedule.max_growths + 1):
        multiplier = schedule.growth_factor**k
        target = 1 / multiplier
        progress = 1 - target if schedule.decay == "linear" else math.acos(2 * target - 1) / math.pi
        at = round((warmup + progress * (steps - warmup)) * batch_size / align) * align
        if align % (batch_size * multiplier) or not 0 < at < budget_examples or (growth and at <= growth[-1][0]):
            break
        growth.append((at, multiplier))
    return tuple(growth)


def growth_steps(batch_size: int, budget_examples: int, growth: tuple[tuple[int, int], ...]) -> int:
    """Optimizer steps within the budget when the batch grows at these points."""
    starts, multipliers = (0, *(at for at, _ in growth)), (1, *(m for _, m in growth))
    ends = (*starts[1:], budget_examples)
    return sum((end - start) // (batch_size * m) for start, end, m in zip(starts, ends, multipliers))


def make_plan(spec: StudySpec, hp: Hyperparams, seed: int, micro_batch_size: int | None) -> TrainingPlan:
    """A trial's plan: its steps within the budget, its batch growth (grow_batch) and its splitting."""
    report_every = spec.report_every()
    growth = batch_growth(hp.batch_size, spec.budget_examples, report_every, spec.schedule) if hp.schedule == "grow_batch" else ()
    steps = growth_steps(hp.batch_size, spec.budget_examples, growth)
    return TrainingPlan(hp.batch_size, steps, hp.effective_lr, hp.momentum, report_every, seed, micro_batch_size, growth)


class Classifier(pl.LightningModule):
    """SGD with momentum on cross-entropy; metrics accumulate on the device between checkpoints.

    Optimization is manual so that one optimizer step can sum the gradients of several
    forward/backward passes; `global_step` still counts optimizer steps.
    """

    def __init__(self, model: nn.Module, plan: TrainingPlan, optimizer: OptimizerSpec, schedule: ScheduleSpec) -> None:
        super().__init__()
        self.model = model
        self.plan = plan
        self.optimizer_spec = optimizer
        self.schedule = schedule
        self.log_book = TrainingLog()
        self.automatic_optimization = False
        self._train_loss_sum = torch.zeros(())  # summed over examples
        self._train_examples = 0
        self._examples_drawn = 0
        self._step_size = plan.batch_size
        self._accumulated = 0  # examples whose gradients await the next optimizer step
        self._val_sums = torch.zeros(3)  # loss sum, correct, count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        optimizer = self.optimizers()
        if self._accumulated == 0:
            self._step_size = self.plan.batch_size * self.plan.multiplier_at(self._examples_drawn)
            optimizer.zero_grad(set_to_none=True)
        micro = self.plan.micro_batch_size or len(labels)
        loss_sum = self._train_loss_sum.to(images.device)
        for micro_images, micro_labels in zip(images.split(micro), labels.split(micro)):
            loss = F.cross_entropy(self.model(micro_images), micro_labels, label_smoothing=self.optimizer_spec.label_smoothing)
            # Weighting each micro-batch's mean by its share of the step sums to the step's mean gradient.
            self.manual_backward(loss * (len(micro_labels) / self._step_size))
            # No .item() here: reading the loss each step would stall a GPU.
            loss_sum = loss_sum + loss.detach().float() * len(micro_labels)
        self._train_loss_sum = loss_sum
        self._train_examples += len(labels)
        self._examples_drawn += len(labels)
        self._accumulated += len(labels)
        if self._accumulated == self._step_size:
            optimizer.step()
            self.lr_schedulers().step()  # type: ignore[union-attr]
            self._accumulated = 0

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(3, device=self.device)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images).float()
        self._val_sums += torch.stack(
            [F.cross_entropy(logits, labels, reduction="sum"), (logits.argmax(1) == labels).sum().float(), torch.tensor(float(len(labels)), device=logits.device)]
        )

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        train_loss = self._train_loss_sum / max(1, self._train_examples)
        self.log_dict(
            {"val_loss": sums[0] / sums[2], "val_acc": sums[1] / sums[2], "train_loss": train_loss},
            sync_dist=True,
        )
        self._train_loss_sum = torch.zeros((), device=self.device)
        self._train_examples = 0

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        momentum = self.plan.momentum
        optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=self.plan.effective_lr,
            momentum=momentum,
            nesterov=self.optimizer_spec.nesterov and momentum > 0,
            weight_decay=self.optimizer_spec.weight_decay,
        )
        # A growing batch replaces the decay: warm-up over the same examples, then a fixed rate.
        schedule = self.schedule.model_copy(update={"decay": "constant"}) if self.plan.growth else self.schedule
        steps = self.plan.examples_after(self.plan.steps) // self.plan.batch_size
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, schedule))
        return [optimizer], [scheduler]


def train(
    model: nn.Module,
    data: DeviceData,
    plan: TrainingPlan,
    optimizer: OptimizerSpec,
    schedule: ScheduleSpec,
    callbacks: list[pl.Callback],
) -> tuple[TrainingLog, int, float]:
    """Train one trial; returns the log, the optimizer steps taken and the training seconds."""
    module = Classifier(model.to(memory_format=data.memory_format), plan, optimizer, schedule)
    on_gpu = data.device.type == "cuda"
    trainer = pl.Trainer(
        accelerator="gpu" if on_gpu else "cpu",
        devices=1,
        precision="bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true",
        max_steps=plan.steps,
        max_epochs=-1,
        val_check_interval=plan.report_every_examples // plan.batch_size,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    started = time.perf_counter()
    try:
        trainer.fit(module, train_dataloaders=data.train_batches(plan.batch_size, plan.seed), val_dataloaders=data.val_batches())
    except (Interrupted, SIGTERMException):
        # (Lightning turns SIGTERM into SystemExit(0), which would leave the trial RUNNING.)
        module.log_book.stop_reason = "interrupted"
    final_examples = plan.examples_after(trainer.global_step)
    if module.log_book.stop_reason is None and final_examples % plan.report_every_examples:
        # The budget is not a multiple of the report interval: measure the final weights too.
        trainer.validate(module, dataloaders=data.val_batches(), verbose=False)
    seconds = time.perf_counter() - started
    return module.log_book, trainer.global_step, seconds
