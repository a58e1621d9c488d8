"""One training run, from model build to the last validation: the function every run goes through.

Trials (`search.study.objective`), test-set retraining (`search.evaluate`) and the noise-scale probe
(`search.measure.probe`, whose measurements are a callback) call `run_training`; so they build the
model the same way (seeded, then as the study trains it: ghost batch norm where it asks), step the
optimizer the same way (`OptimizerStep`), and end the same way on out-of-memory. The speed profile
times single `OptimizerStep`s of several batch sizes in interleaved windows, which a whole run
cannot do, and shares everything below the run.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from search.config.spec import OptimizerSpec, ScheduleSpec, StudySpec
from search.data.source import TrialData
from search.errors import TrialFailed
from search.train.batch_norm import Recalibration
from search.train.curves import TrainingCurves
from search.train.model import build_model, training_step
from search.train.module import Interrupted, TrainingLog, TrialModule
from search.train.plan import TrainingPlan
from search.train.step import TrainingStep


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's out-of-memory error, or the CPU allocator's."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@dataclass
class RunResult:
    """What a run produced. `out_of_memory` holds the error's first line when the device ran out of
    memory (the run's model is then released and `step` is None)."""

    log: TrainingLog
    steps_done: int
    train_seconds: float  # from the first step to the last validation, validations included
    step: TrainingStep | None
    out_of_memory: str | None = None


def run_training(
    spec: StudySpec,
    data: TrialData,
    plan: TrainingPlan,
    callbacks: Sequence[pl.Callback] = (),
    curves: TrainingCurves | None = None,
    recalibration: Recalibration | None = None,
    prepare: Callable[[nn.Module], nn.Module] = lambda model: model,
) -> RunResult:
    """Build the study's model from `plan.seed` (which fixes the initial weights as well as the example
    order), `prepare` it (e.g. `BatchSplitter.prepare`: ghost batch norm), and train it for the plan's steps.

    Out of memory ends the run with `out_of_memory` set, its memory released; every other error is raised."""
    torch.manual_seed(plan.seed)
    step: TrainingStep | None = training_step(spec, prepare(build_model(spec, data)), data.device)
    try:
        assert step is not None
        log, steps_done, seconds = train(step, data, plan, spec.optimizer, spec.schedule, list(callbacks), curves, recalibration)
    except SystemExit as exited:  # Lightning's SIGTERM is handled in `train`: this is the user's code calling sys.exit
        raise TrialFailed("user code exited", f"sys.exit({exited.code!r}) during training: a failure of this run, never success") from None
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        step = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return RunResult(TrainingLog(), 0, 0.0, None, str(error).split("\n")[0])
    return RunResult(log, steps_done, seconds, step)


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
