"""The Lightning module of a trial: any model trained for `budget // batch_size` steps.

Validation falls every `report_every_examples` examples (a multiple of every batch size),
so all trials are measured at the same examples-seen checkpoints, plus once at the end.

The optimizer step is `OptimizerStep` (search.train.optim), shared with every other run.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch

from search.config.spec import OptimizerSpec, ScheduleSpec
from search.data.slicing import Batch, batch_length
from search.errors import UserError
from search.record import Checkpoint
from search.train.batch_norm import Recalibration
from search.train.optim import OptimizerStep
from search.train.plan import TrainingPlan
from search.train.step import TrainingStep

for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Our batches come from an endless on-device iterable: Lightning's DataLoader advice does not apply.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


class Interrupted(Exception):
    """Raised between batches on SIGINT/SIGTERM: leaves `fit` at once, with no extra validation."""


@dataclass
class TrainingLog:
    """What the run produced; filled in by the module and the reporter as training goes."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    stop_reason: str | None = None  # "pruned" or "diverged" when stopped early
    validation_seconds: float = 0.0


class TrialModule(pl.LightningModule):
    """The service's side of a trial: optimizer, schedule, batch and validation are ours; the
    forward pass and loss are the model's (its `training_step` for a LightningModule).

    Optimization is manual so that one optimizer step can sum the gradients of several
    forward/backward passes; `global_step` still counts optimizer steps. Metrics accumulate on
    the device between checkpoints (no `.item()` per step: it would stall a GPU).
    """

    def __init__(
        self, step: TrainingStep, plan: TrainingPlan, optimizer: OptimizerSpec, schedule: ScheduleSpec, recalibration: Recalibration | None = None
    ) -> None:
        super().__init__()
        self.model = step.model
        self.step = step
        self.plan = plan
        self.update = OptimizerStep(step, plan, optimizer, schedule)
        self.recalibration = recalibration  # batch-norm statistics recomputed before each validation; None: as trained
        self.log_book = TrainingLog()
        self.automatic_optimization = False
        self._train_loss_sum = torch.zeros(())  # summed over examples
        self._train_examples = 0
        self._val_sums = torch.zeros(3)  # loss sum, correct, count
        # The training curves' loss since their last point, with nothing added per step: `_train_loss_sum` where they
        # took it last (None: no curves), and what it had gained by then if a checkpoint has reset it since.
        self._curve_mark: torch.Tensor | None = None
        self._curve_carry = torch.zeros(())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def _as_model(self, hook: str) -> None:
        """A LightningModule's own `self.log` works inside our hooks: it logs as this hook."""
        if self.step.lightning:
            self.model._current_fx_name = hook  # type: ignore[assignment]

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        self._as_model("training_step")
        loss_sum = self.update.add(batch, batch_idx, self.manual_backward, self.optimizers())
        self._train_loss_sum = self._train_loss_sum.to(loss_sum.device) + loss_sum  # out of place: see _curve_gain
        self._train_examples += batch_length(batch)

    def on_validation_epoch_start(self) -> None:
        if self.recalibration is not None:
            self.recalibration(self.step)
        self._val_sums = torch.zeros(3, device=self.device)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if self.step.lightning:
            self._as_model("validation_step")
            with self.step.precision():
                self.model.validation_step(batch, batch_idx)  # type: ignore[operator]
            return
        loss_sum, correct = self.step.evaluate(batch)
        zero = torch.zeros((), device=loss_sum.device)
        self._val_sums += torch.stack([loss_sum.float(), zero if correct is None else correct, torch.tensor(float(batch_length(batch)), device=loss_sum.device)])

    def start_curve_loss(self) -> None:
        """The training curves start here (TrainingCurves, when training starts)."""
        self._curve_mark, self._curve_carry = self._train_loss_sum, torch.zeros(())

    def take_curve_loss(self) -> torch.Tensor:
        """The loss summed over the examples since the curves' last point (on the device, no sync); the next starts here."""
        taken = self._curve_gain()
        self._curve_mark, self._curve_carry = self._train_loss_sum, torch.zeros(())
        return taken

    def _curve_gain(self) -> torch.Tensor:
        # `_train_loss_sum` is a new tensor after each step (added out of place): the mark is a snapshot, taken for free.
        assert self._curve_mark is not None, "start_curve_loss() first"
        device = self._train_loss_sum.device
        return self._curve_carry.to(device) + (self._train_loss_sum - self._curve_mark.to(device))

    def checkpoint_metrics(self) -> tuple[float, float, float | None]:
        """(train loss since the last checkpoint, validation loss, validation accuracy or None), then reset."""
        train_loss = float(self._train_loss_sum / max(1, self._train_examples))
        if self._curve_mark is not None:  # the curves' share since their last point outlives the reset
            self._curve_carry = self._curve_gain()
        self._train_loss_sum = torch.zeros((), device=self.device)
        self._train_examples = 0
        if self._curve_mark is not None:
            self._curve_mark = self._train_loss_sum
        if self.step.lightning:
            logged = self.trainer.callback_metrics
            if "val_loss" not in logged:
                # The user's code, not this trial: stop the run with one paragraph (exit 2), not a traceback.
                raise UserError(
                    f"{type(self.model).__name__}.validation_step logged no 'val_loss' (logged: {', '.join(sorted(logged)) or 'nothing'}). "
                    "Trials are ranked and pruned by it: add self.log('val_loss', loss) to validation_step (and self.log('val_acc', acc) "
                    "for an accuracy), then run again."
                )
            accuracy = logged.get("val_acc")
            return train_loss, float(logged["val_loss"]), None if accuracy is None else float(accuracy)
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        accuracy = float(sums[1] / sums[2]) if self.step.classifies else None
        return train_loss, float(sums[0] / sums[2]), accuracy

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return [self.update.optimizer], [self.update.scheduler]
