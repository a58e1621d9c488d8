"""The noise-scale probe: B_simple measured along a training run of the study's model.

At initialization and at points along a run, the study's own training step gives the gradient
norms at two batch sizes (`noise_scale.estimate`); `search.probe` is the command. The run uses a
tuned configuration when the study has one (a frontier study's best at the probe's batch size),
so the trajectory of B_simple against the training loss is that of a run worth describing; B_simple
changes along training, so one value describes one loss level only. By default the learning rate is
held constant after warm-up (`ProbeSettings.schedule`): an annealed rate shrinks |G|^2 late in a
run for reasons that are not the loss level, and the frontier reads B_simple at a matched loss.

Normalization: a model with batch norm trains with the study's grouping (the whole batch, or
`batch_norm.group` groups) and is measured with ghost batch norm over groups of
`group` examples, no larger than the smallest batch size a trial trains with: each group is then
an independent unit of the estimator, whatever the chunk size (`noise_scale` says why). A model
without batch norm needs nothing: its chunk gradients are means of independent per-example ones.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Iterator, Literal

import lightning.pytorch as pl
import torch

from search.config.spec import StudySpec
from search.data.slicing import Batch
from search.data.source import TrialData
from search.errors import UserError
from search.measure import noise_scale
from search.record import ProbePoint, ProbeResult
from search.render.text import number_text
from search.train.accumulation import ghost_groups, has_batch_norm, use_ghost_batch_norm
from search.train.module import TrialModule
from search.train.plan import TrainingPlan
from search.train.run import run_training


@dataclass(frozen=True)
class ProbeRun:
    """The configuration the probe trains with, and where it came from."""

    batch_size: int
    lr: float
    momentum: float
    effective_lr: float
    source: str  # in words: "the frontier's best at batch size 16 (search trial 12)" or "untuned: the middle of the search space"
    tuned: bool


@dataclass(frozen=True)
class ProbeSettings:
    """How the probe runs and measures (`search.probe`'s options); None: a default that `for_group` and `for_run` fill in."""

    batch_size: int | None = None  # of the training run (default: a frontier's smallest, else the middle of the search space)
    train_examples: int | None = None  # the run's length (default: the budget with a tuned configuration, else 8192)
    points: int | None = None  # measurements after initialization (default: 8 tuned, 3 untuned)
    small_batch: int | None = None  # the estimator's small batch, a multiple of the normalization group (default: about 32)
    big_batch: int | None = None  # its big batch, a multiple of the small one (default: 16 x the small one)
    measurements: int = 16  # big batches averaged per point
    seed: int = 0  # of the initial weights and the batches
    # "constant": the learning rate held after warm-up, so that annealing does not shrink |G|^2 and the noise scale is
    # the training's at each loss; "study": the study's decay, as its trials train.
    schedule: Literal["constant", "study"] = "constant"

    def for_group(self, group: int | None) -> ProbeSettings:
        """The estimator's defaults from the normalization group, checked."""
        unit = group or 1
        small = self.small_batch if self.small_batch is not None else unit * max(1, round(32 / unit))
        big = self.big_batch if self.big_batch is not None else 16 * small
        if small < 1 or small % unit or big % small or big <= small:
            raise UserError(
                f"--big-batch ({big}) must be a larger multiple of --small-batch ({small}), and --small-batch a "
                f"multiple of the normalization group ({unit}: {'the smallest batch size trials train with' if group else 'no batch norm'}): "
                f"the estimator splits each big batch into small ones. E.g. --small-batch {unit * max(1, round(32 / unit))} (the default)."
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1 (got {self.batch_size}); leave it out for the frontier's smallest or the search space's middle.")
        if (self.points is not None and self.points < 1) or self.measurements < 2:
            raise UserError(f"--points must be at least 1 and --measurements at least 2 (got {self.points} and {self.measurements}).")
        return replace(self, small_batch=small, big_batch=big)

    def for_run(self, spec: StudySpec, run: ProbeRun) -> ProbeSettings:
        """The run's defaults (a tuned run trains the whole budget), checked."""
        examples = self.train_examples if self.train_examples is not None else spec.budget_examples if run.tuned else 8192
        points = self.points if self.points is not None else 8 if run.tuned else 3
        if run.batch_size < 1 or examples < run.batch_size * points:
            raise UserError(
                f"--train-examples ({examples}) gives fewer than one step of batch size {run.batch_size} per point "
                f"(--points {points}); raise it to at least {run.batch_size * points}."
            )
        return replace(self, train_examples=examples, points=points)


def untuned_run(spec: StudySpec, batch_size: int) -> ProbeRun:
    """The middle of the search space (geometric on a log range): used when the study has no tuned configuration yet."""
    lr_range, momentum_range = spec.search_space.lr, spec.search_space.momentum
    lr = math.sqrt(lr_range.low * lr_range.high) if lr_range.log else (lr_range.low + lr_range.high) / 2
    momentum = (momentum_range.low + momentum_range.high) / 2
    effective = spec.lr_parameterization.effective_lr(lr, batch_size, momentum)
    return ProbeRun(batch_size, lr, momentum, effective, "untuned: the middle of the search space", tuned=False)


def normalization_group(spec: StudySpec, model: torch.nn.Module) -> int | None:
    """The ghost-batch-norm group the probe measures with; None for a model without batch norm."""
    if not has_batch_norm(model):
        return None
    smallest = min(spec.search_space.batch_sizes())
    configured = spec.batch_norm.group
    return min(configured, smallest) if isinstance(configured, int) else smallest


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Measurements(pl.Callback):
    """B_simple at initialization and after each of `boundaries` optimizer steps of the probe's run."""

    def __init__(
        self, args: ProbeSettings, boundaries: list[int], group: int | None, batch_size: int, measure_batches: Iterator[Batch], started: float
    ) -> None:
        self.args, self.boundaries, self.group, self.batch_size, self.started = args, boundaries, group, batch_size, started
        self.measure_batches = measure_batches
        self.points: list[ProbePoint] = []
        self._last_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, TrialModule)
        pl_module.start_curve_loss()
        self._measure_due(0, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: object, batch_idx: int) -> None:
        assert isinstance(pl_module, TrialModule)
        self._measure_due(trainer.global_step, pl_module)

    def _measure_due(self, step: int, module: TrialModule) -> None:
        while len(self.points) < len(self.boundaries) and self.boundaries[len(self.points)] <= step:
            taken = step - self._last_step
            train_loss = float(module.take_curve_loss()) / (taken * self.batch_size) if taken else None
            self._last_step = step
            point_started = time.perf_counter()
            with ghost_groups(module.step.model, self.group or sys.maxsize):
                estimate = noise_scale.estimate(module.step, self.measure_batches, self.args.small_batch, self.args.measurements)
            self.points.append(ProbePoint(
                steps=step, examples_seen=step * self.batch_size, train_loss=train_loss, b_simple_loss=estimate.loss,
                gradient_sq=estimate.gradient_sq, trace=estimate.trace, b_simple=_finite(estimate.b_simple), stderr=_finite(estimate.stderr),
            ))
            done = time.perf_counter() - self.started
            eta = done / len(self.points) * (len(self.boundaries) - len(self.points))
            print(_point_line(self.points[-1], time.perf_counter() - point_started) + f"  [{len(self.points)}/{len(self.boundaries)}, ETA {eta:.0f} s]", flush=True)


def run_probe(spec: StudySpec, data: TrialData, args: ProbeSettings, run: ProbeRun, group: int | None) -> ProbeResult:
    """Train the study's model with `run`, estimating the noise scale at init and `args.points` times along the way.

    `args` are settings resolved by `for_group` and `for_run`. The run is a trial's run (`run_training`: the same model build, optimizer step and schedule); the
    measurements are a callback between its steps, on big batches drawn from their own seeded stream."""
    assert args.train_examples and args.points and args.small_batch and args.big_batch, "resolve the settings first"
    started = time.perf_counter()
    batch_size = run.batch_size
    steps = args.train_examples // batch_size
    plan = TrainingPlan(batch_size, steps, run.effective_lr, run.momentum, report_every_examples=steps * batch_size, seed=args.seed)
    normalization = (
        f"batch norm over ghost groups of {group} examples (the smallest batch size trials train with; each group is one "
        "independent unit of the estimator)" if group is not None else "no batch norm: per-example gradients averaged in chunks"
    )
    print(
        f"probe    {spec.model.describe()} at batch size {batch_size}, lr {run.lr:.4g} (effective {run.effective_lr:.4g}), momentum "
        f"{run.momentum:.3f} ({run.source}), for {steps * batch_size:,} examples ({steps} steps, augmentation on, learning rate "
        f"{'held constant after warm-up' if args.schedule == 'constant' else f'with the study schedule ({spec.schedule.decay} decay)'}); gradient norms at "
        f"{args.small_batch} and {args.big_batch} examples, {args.measurements} big batches per point; {normalization}",
        flush=True,
    )
    boundaries = [round(steps * k / args.points) for k in range(args.points + 1)]
    measurements = _Measurements(args, boundaries, group, batch_size, iter(data.train_batches(args.big_batch, args.seed + 1)), started)

    def prepare(model: torch.nn.Module) -> torch.nn.Module:
        # Train with the study's grouping (the whole batch: one group as large as any batch); measure with `group`.
        if group is None:
            return model
        configured = spec.batch_norm.group
        return use_ghost_batch_norm(model, configured if isinstance(configured, int) else sys.maxsize)

    trained = spec if args.schedule == "study" else spec.model_copy(update={"schedule": spec.schedule.model_copy(update={"decay": "constant"})})
    result = run_training(trained, data, plan, [measurements], prepare=prepare)
    if result.out_of_memory is not None:
        raise UserError(
            f"The probe ran out of memory at batch size {batch_size:,} (big batches of {args.big_batch:,}): {result.out_of_memory}. "
            "Run it again with a smaller --big-batch."
        )
    return ProbeResult(
        created=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        batch_size=batch_size, lr=run.lr, effective_lr=run.effective_lr, momentum=run.momentum,
        hyperparams_from=run.source, tuned=run.tuned, normalization=normalization, normalization_group=group,
        train_examples=steps * batch_size, augmentation=True, seed=args.seed,
        small_batch=args.small_batch, big_batch=args.big_batch, measurements=args.measurements,
        points=tuple(measurements.points), seconds=time.perf_counter() - started, schedule=trained.schedule.decay,
    )


def _point_line(point: ProbePoint, seconds: float) -> str:
    where = "at initialization" if point.steps == 0 else f"after {point.examples_seen:,} examples ({point.steps} steps)"
    where += f", training loss {number_text(point.b_simple_loss, '.3f')}"
    b_simple = (
        f"B_simple {point.b_simple:,.0f} ± {point.stderr or math.nan:,.0f}" if point.b_simple is not None
        else "B_simple undefined (|G|^2 estimate not positive: more --measurements)"
    )
    return f"probe    {where}: |G|^2 {point.gradient_sq:.4g}  tr(Sigma) {point.trace:.4g}  {b_simple}  ({seconds:.1f} s)"


def prediction_lines(result: ProbeResult, batch_sizes: list[int]) -> list[str]:
    """What the probe says, for the console: B_simple at the end, its trajectory, and the batch sizes worth searching."""
    last, span = result.last, result.suggested_range
    if last.b_simple is None or span is None:
        return ["no prediction: the last |G|^2 estimate is not positive; run again with more --measurements or a longer run."]
    low, high = span
    inside = ", ".join(f"{b:,}" for b in batch_sizes if low <= b <= high) or "none of the study's batch sizes"
    trajectory = ", ".join(f"{p.b_simple:,.0f} at loss {number_text(p.b_simple_loss, '.2f')}" for p in result.points if p.b_simple is not None)
    return [
        f"B_simple = {last.b_simple:,.0f} ± {last.stderr or math.nan:,.0f} at training loss {number_text(last.b_simple_loss, '.3f')} "
        f"(after {result.train_examples:,} examples; {result.hyperparams_from})",
        f"trajectory  {trajectory}",
        "B_simple is a proxy for the critical batch size, exact only when the Hessian is proportional to the identity; in a frontier "
        "study with its efficiency curve, search.report measures B_crit itself and predicts the frontier from this trajectory.",
        f"suggested batch sizes to search  {low:,.0f} to {high:,.0f} (B_simple/8 to 2 B_simple): {inside}",
    ]
