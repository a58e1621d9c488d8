"""Report validation loss to the Optuna trial at equal cost: `step = examples seen`.

optuna-integration's PyTorchLightningPruningCallback reports with `step = current_epoch`,
which compares a batch-1024 trial with a batch-16 trial at unequal cost and collides when
validation runs several times per epoch. This callback keeps its DDP design: only global
rank zero talks to the storage, and its decision to stop is broadcast to every rank.
With a time budget the key is the predicted training time instead (`step = milliseconds`).
"""
from __future__ import annotations

import math
import time
from typing import Protocol

import lightning.pytorch as pl
import optuna
from lightning.pytorch.trainer.states import TrainerFn

from search.record import Checkpoint
from search.study.shutdown import STOP
from search.train.module import Interrupted, TrialModule

# How often a running trial tells its progress listener where it is.
STEP_REPORT_SECONDS = 1.0


class ProgressListener(Protocol):
    """What a worker shows while it trains (the console's Progress implements it)."""

    def on_step(self, trial: optuna.Trial, examples_seen: int, total_examples: int) -> None: ...

    def on_checkpoint(self, trial: optuna.Trial, checkpoint: Checkpoint) -> None: ...


class ExamplesSeenReporter(pl.Callback):
    def __init__(self, trial: optuna.Trial, progress: ProgressListener | None = None, report_every_ms: int | None = None) -> None:
        self.trial = trial
        self.progress = progress
        self._next_step_report = 0.0
        # With a time budget, checkpoint k falls after k x report_every_ms of predicted training time
        # (a step count fixed per batch size from the speed profile) and is reported at that step.
        self.report_every_ms = report_every_ms
        self._validation_started = 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: object, batch_idx: int) -> None:
        if STOP:
            raise Interrupted(STOP.reason)
        if self.progress is not None and time.monotonic() >= self._next_step_report:  # a clock read per batch, a report per second
            self._next_step_report = time.monotonic() + STEP_REPORT_SECONDS
            assert isinstance(pl_module, TrialModule)
            plan = pl_module.plan
            self.progress.on_step(self.trial, plan.examples_after(trainer.global_step), plan.examples_after(plan.steps))

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, TrialModule)
        log = pl_module.log_book
        train_loss, val_loss, val_acc = pl_module.checkpoint_metrics()
        checkpoint = Checkpoint(pl_module.plan.examples_after(trainer.global_step), train_loss, val_loss, val_acc)
        log.checkpoints.append(checkpoint)
        log.validation_seconds += time.perf_counter() - self._validation_started
        stop_reason = None
        if trainer.is_global_zero:
            if self.progress is not None:
                self.progress.on_checkpoint(self.trial, checkpoint)
            if not (math.isfinite(checkpoint.train_loss) and math.isfinite(checkpoint.val_loss)):
                stop_reason = "diverged"
            elif checkpoint.examples_seen % pl_module.plan.report_every_examples == 0:
                # Only the shared checkpoints are reported: pruners compare values at equal keys.
                self.trial.report(checkpoint.val_loss, step=self._report_step(checkpoint.examples_seen, pl_module.plan.report_every_examples))
                mid_training = trainer.state.fn == TrainerFn.FITTING and trainer.global_step < pl_module.plan.steps
                if mid_training and self.trial.should_prune():
                    stop_reason = "pruned"
        stop_reason = trainer.strategy.broadcast(stop_reason)
        if stop_reason:
            log.stop_reason = stop_reason
            trainer.should_stop = True

    def _report_step(self, examples_seen: int, report_every_examples: int) -> int:
        if self.report_every_ms is None:
            return examples_seen
        return examples_seen // report_every_examples * self.report_every_ms
