"""One trial: sample hyperparameters, train under the fixed example budget, store the results."""
from __future__ import annotations

import os
import socket
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import optuna
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from search.config.spec import StudySpec
from search.data.source import TrialData
from search.errors import TrialFailed
from search.measure import time_budget
from search.measure.profile import SpeedProfile, fastest_micro_batch
from search.measure.sharpness import diagnose
from search.record import SEED, TrialRecord, is_finite
from search.store.artifacts import CheckpointKeeper
from search.store.optuna_internals import frozen
from search.store.urls import RESULTS_DIR
from search.study import space
from search.study.frontier import efficiency_budget, paired_seed
from search.study.reporting import ExamplesSeenReporter, ProgressListener
from search.study.shutdown import STOP
from search.train.accumulation import BatchSplitter
from search.train.batch_norm import Recalibration
from search.train.curves import TrainingCurves, hyperparameters
from search.train.plan import TrainingPlan, make_plan, warmup_steps
from search.train.run import run_training
from search.train.step import TrainingStep


class Objective:
    """Callable for `study.optimize`; holds what stays the same across a worker's trials."""

    def __init__(
        self,
        spec: StudySpec,
        data: TrialData,
        device_name: str,
        progress: ProgressListener | None = None,
        on_start: Callable[[], None] | None = None,
        callbacks: Sequence[pl.Callback] = (),
        profile: SpeedProfile | None = None,
        keeper: CheckpointKeeper | None = None,
    ) -> None:
        self.spec = spec
        self.data = data
        self.device_name = device_name
        self.progress = progress
        self.on_start = on_start
        self.callbacks = list(callbacks)  # extra Lightning callbacks, e.g. the benchmarks' step timer
        self.profile = profile  # this device's speed profile (search.speed); needed with budget_seconds
        self.keeper = keeper  # keeps the final weights of the study's best trials (checkpoints); None: nothing kept
        self.splitter = BatchSplitter.for_study(spec, data, device_name)
        self.recalibration = Recalibration(data, spec.batch_norm)  # its subset drawn once, for all of this worker's trials

    def __call__(self, trial: optuna.Trial) -> float:
        if self.on_start:
            self.on_start()
        started = time.perf_counter()
        spec = self._trial_spec(trial)
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen(trial))
        if retried is not None:
            TrialRecord(retry_of=retried).store(trial)
        hp = space.sample(trial, spec)
        profile = self.profile.corrected(self._trained_rates(trial.study)) if self.profile else None
        fastest = fastest_micro_batch(profile, hp.batch_size) if profile else None
        micro_batch_size = self.splitter.micro_batch_size(hp.batch_size, fastest)
        plan = make_plan(spec, hp, self._seed(trial), micro_batch_size)
        timing: dict[str, Any] = {}
        if spec.budget_seconds is not None:
            assert profile is not None, "the worker measures or loads the profile before any trial"
            plan, timing = time_budget.time_plan(plan, spec, profile)
        attrs: dict[str, Any] = {
            **timing,
            "reason": "",  # a retried trial inherits its predecessor's attributes: clear the reason
            "effective_lr": hp.effective_lr,
            "steps": plan.steps,
            "warmup_steps": warmup_steps(plan.schedule_steps(), plan.batch_size, spec.schedule),
            "budget_examples": spec.budget_examples,
            "schedule": hp.schedule,
            "micro_batch_size": plan.micro_batch_size or plan.batch_size,
            "normalization_batch": spec.batch_norm.group,
            "device": self.device_name,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "seed": plan.seed,
            "optimizer": spec.optimizer.name,
        }
        reporter = ExamplesSeenReporter(trial, self.progress, spec.report_every_ms() if spec.budget_seconds is not None else None)
        # The trial's run in the user's logger: results/<study>/logs/<study>/trial_<number> by default.
        curves = TrainingCurves.create(
            spec.logging, spec.name, f"trial_{trial.number}", RESULTS_DIR / spec.name,
            hyperparameters(hp, spec.optimizer.name, trial=trial.number, steps=plan.steps, seed=plan.seed),
        )
        try:
            run = run_training(spec, self.data, plan, [reporter, *self.callbacks], curves, self.recalibration, self.splitter.prepare)
        except TrialFailed as failed:  # e.g. the user's code called sys.exit: this trial fails, the study goes on
            self._store(trial, {**attrs, "reason": str(failed), "wall_seconds": time.perf_counter() - started})
            raise
        if run.out_of_memory is not None:
            self._store(trial, {**attrs, "reason": "out_of_memory", "wall_seconds": time.perf_counter() - started})
            raise TrialFailed("out_of_memory", run.out_of_memory)
        assert run.step is not None
        log, steps_done, train_seconds, step = run.log, run.steps_done, run.train_seconds, run.step
        examples_seen = plan.examples_after(steps_done)
        pure_training = max(train_seconds - log.validation_seconds, 1e-9)
        attrs.update(
            examples_seen=examples_seen,
            wall_seconds=time.perf_counter() - started,
            examples_per_second=examples_seen / pure_training,
            train_seconds=pure_training,
        )
        if log.checkpoints:
            final = log.checkpoints[-1]
            finite = [c for c in log.checkpoints if c.val_loss == c.val_loss]
            best = min(finite, key=lambda c: c.val_loss) if finite else final
            attrs.update(
                final_val_loss=final.val_loss,
                final_val_acc=final.val_acc,
                best_val_loss=best.val_loss,
                best_val_acc=best.val_acc,
                train_loss=final.train_loss,
            )
            if self._diagnosed(trial) and log.stop_reason is None:
                attrs.update(self._diagnose(step, final.val_loss, train_seconds, plan))
        if log.stop_reason == "pruned":
            attrs["reason"] = f"pruned at {examples_seen:,} examples"
        elif log.stop_reason == "diverged":
            attrs["reason"] = "diverged"
        elif log.stop_reason == "interrupted":
            attrs["reason"] = STOP.reason
        self._store(trial, attrs)
        # An efficiency run trained a share of the budget: never among the study's best, never kept.
        if self.keeper is not None and log.stop_reason is None and is_finite(attrs.get("final_val_loss")) and spec is self.spec:
            self._keep(trial, step, attrs["final_val_loss"])
        if log.stop_reason == "interrupted":
            # Queue the same configuration again: re-running the command carries on with it.
            trial.study.enqueue_trial(trial.params, user_attrs={**self._frontier_attrs(trial), **TrialRecord(retry_of=trial.number).attrs()})
            raise TrialFailed(STOP.reason)
        if log.stop_reason:
            # A diverged trial is pruned, not failed: the sampler then learns that region is bad.
            raise optuna.TrialPruned(attrs["reason"])
        return attrs["final_val_loss"]

    def _trial_spec(self, trial: optuna.Trial) -> StudySpec:
        """The study's spec, with a frontier efficiency trial's share of the example budget."""
        fraction = TrialRecord.of(trial).frontier_fraction
        if fraction is None:
            return self.spec
        return self.spec.model_copy(update={"budget_examples": efficiency_budget(self.spec, fraction)})

    def _seed(self, trial: optuna.Trial) -> int:
        """A frontier trial's seed is paired across batch sizes; a joint search's is the trial's own."""
        record = TrialRecord.of(trial)
        if record.frontier_role is not None and record.frontier_index is not None:
            return paired_seed(self.spec, record.frontier_role, record.frontier_index)
        return self.spec.sampler.seed * 1_000_003 + trial.number

    @staticmethod
    def _frontier_attrs(trial: optuna.Trial) -> dict[str, Any]:
        """What places a trial in the frontier's plan: a re-queued copy keeps it."""
        record = TrialRecord.of(trial)
        return TrialRecord(**{name: getattr(record, name) for name in TrialRecord.names() if name.startswith("frontier_")}).attrs()

    def _trained_rates(self, study: optuna.Study) -> dict[int, float]:
        """Median examples/s that this device's finished trials trained at, by micro-batch size."""
        rates: dict[int, list[float]] = {}
        for finished in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            record = TrialRecord.of(finished)
            if record.device == self.device_name and record.micro_batch_size and record.examples_per_second:
                rates.setdefault(record.micro_batch_size, []).append(record.examples_per_second)
        return {size: statistics.median(values) for size, values in rates.items()}

    def _diagnosed(self, trial: optuna.Trial) -> bool:
        """Diagnostics on every trial of a joint study; in a frontier study on the seed re-runs only, the
        trials it compares (a search trial's sharpness would cost as much and enter no comparison)."""
        role = TrialRecord.of(trial).frontier_role
        return self.spec.diagnostics.enabled and role in (None, SEED)

    def _diagnose(self, step: TrainingStep, val_loss: float, train_seconds: float, plan: TrainingPlan) -> dict[str, Any]:
        """Sharpness and generalization gap of a completed trial; a failure here is stored, never fails the trial."""
        try:
            return diagnose(
                step, self.data, val_loss, self.spec.diagnostics, train_seconds, plan.effective_lr, plan.momentum, self.spec.optimizer
            )
        except Exception as error:  # noqa: BLE001 - the trial itself has succeeded
            return {"diagnostics_skipped": f"{type(error).__name__}: {error}".split("\n")[0]}

    def _keep(self, trial: optuna.Trial, step: TrainingStep, value: float) -> None:
        """The final weights, as a CPU state dict, if the trial is among the study's best (while it still runs: its
        attributes can be written). A ghost-batch-norm model's keys are as trained (`...bn.norm.weight`).
        A failure here is reported, never fails the trial."""
        assert self.keeper is not None

        def save(path: Any) -> None:
            state = step.model.state_dict()
            torch.save({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}, path)

        try:
            self.keeper.keep(trial, value, save)
        except Exception as error:  # noqa: BLE001 - the trial itself has succeeded
            print(f"trial {trial.number}: final weights not kept: {type(error).__name__}: {error}".split("\n")[0], file=sys.stderr, flush=True)

    @staticmethod
    def _store(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        """Keys are `TrialRecord` fields (a misspelt one raises), written as `record.attrs()`."""
        TrialRecord(**attrs).store(trial)
