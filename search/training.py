"""One trial's training run: a Lightning module trained for `budget // batch_size` steps.

Validation falls every `report_every_examples` examples (a multiple of every batch size),
so all trials are measured at the same examples-seen checkpoints, plus once at the end.
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
from search.spec import OptimizerSpec, ScheduleSpec

for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Our batches come from an endless on-device iterable: Lightning's DataLoader advice does not apply.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


class Interrupted(Exception):
    """Raised between batches on SIGINT/SIGTERM: leaves `fit` at once, with no extra validation."""


@dataclass(frozen=True)
class TrainingPlan:
    batch_size: int
    steps: int
    effective_lr: float
    momentum: float
    report_every_examples: int
    seed: int


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


class Classifier(pl.LightningModule):
    """SGD with momentum on cross-entropy; metrics accumulate on the device between checkpoints."""

    def __init__(self, model: nn.Module, plan: TrainingPlan, optimizer: OptimizerSpec, schedule: ScheduleSpec) -> None:
        super().__init__()
        self.model = model
        self.plan = plan
        self.optimizer_spec = optimizer
        self.schedule = schedule
        self.log_book = TrainingLog()
        self._train_loss_sum = torch.zeros(())
        self._train_batches = 0
        self._val_sums = torch.zeros(3)  # loss sum, correct, count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = F.cross_entropy(self.model(images), labels, label_smoothing=self.optimizer_spec.label_smoothing)
        # No .item() here: reading the loss each step would stall a GPU.
        self._train_loss_sum = self._train_loss_sum.to(loss.device) + loss.detach().float()
        self._train_batches += 1
        return loss

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
        train_loss = self._train_loss_sum / max(1, self._train_batches)
        self.log_dict(
            {"val_loss": sums[0] / sums[2], "val_acc": sums[1] / sums[2], "train_loss": train_loss},
            sync_dist=True,
        )
        self._train_loss_sum = torch.zeros((), device=self.device)
        self._train_batches = 0

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        momentum = self.plan.momentum
        optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=self.plan.effective_lr,
            momentum=momentum,
            nesterov=self.optimizer_spec.nesterov and momentum > 0,
            weight_decay=self.optimizer_spec.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, self.plan.steps, self.schedule))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


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
    final_examples = trainer.global_step * plan.batch_size
    if module.log_book.stop_reason is None and final_examples % plan.report_every_examples:
        # The budget is not a multiple of the report interval: measure the final weights too.
        trainer.validate(module, dataloaders=data.val_batches(), verbose=False)
    seconds = time.perf_counter() - started
    return module.log_book, trainer.global_step, seconds
