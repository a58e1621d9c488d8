"""One trial's training run: the Lightning Trainer around the trial module, for the plan's steps."""
from __future__ import annotations

import time

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException

from search.config.spec import OptimizerSpec, ScheduleSpec
from search.data.source import TrialData
from search.train.batch_norm import Recalibration
from search.train.curves import TrainingCurves
from search.train.module import Interrupted, TrainingLog, TrialModule
from search.train.plan import TrainingPlan
from search.train.step import TrainingStep


def train(
    step: TrainingStep,
    data: TrialData,
    plan: TrainingPlan,
    optimizer: OptimizerSpec,
    schedule: ScheduleSpec,
    callbacks: list[pl.Callback],
    curves: TrainingCurves | None = None,
    recalibration: Recalibration | None = None,
) -> tuple[TrainingLog, int, float]:
    """Train one trial; returns the log, the optimizer steps taken and the training seconds.

    `curves`: the trial's run in the user's logger (search.train.curves); without it, nothing is logged.
    `recalibration`: batch-norm statistics recomputed before every validation, the final one included
    (search.train.batch_norm); without it, validation uses the running averages as trained."""
    step.model.to(memory_format=data.memory_format)
    module = TrialModule(step, plan, optimizer, schedule, recalibration)
    trainer = pl.Trainer(
        accelerator="gpu" if data.device.type == "cuda" else "cpu",
        devices=1,
        # The training step applies its own autocast (bf16 on a GPU): the same in trials and measurements.
        precision="32-true",
        max_steps=plan.steps,
        max_epochs=-1,
        val_check_interval=plan.report_every_examples // plan.batch_size,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=curves.logger if curves else False,
        log_every_n_steps=curves.every_n_steps if curves else 50,  # a LightningModule's own self.log values
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, curves] if curves else callbacks,  # curves last: they log the checkpoint just made
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
