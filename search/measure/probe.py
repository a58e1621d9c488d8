"""The noise-scale probe: B_simple measured along a short training run of the study's model.

At initialization and at a few points of the run, the study's own training step gives the
gradient norms at two batch sizes (`noise_scale.estimate`); `search.probe` is the command.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from datetime import datetime, timezone
from typing import Any

import torch

from search.config.spec import StudySpec
from search.data.source import TrialData
from search.measure import noise_scale
from search.train.model import build_model, training_step
from search.train.module import TrialModule
from search.train.plan import TrainingPlan


def probe_hyperparams(spec: StudySpec, batch_size: int) -> tuple[float, float, float]:
    """(lr, momentum, effective lr): the middle of the search space (geometric on a log range)."""
    lr_range, momentum_range = spec.search_space.lr, spec.search_space.momentum
    lr = math.sqrt(lr_range.low * lr_range.high) if lr_range.log else (lr_range.low + lr_range.high) / 2
    momentum = (momentum_range.low + momentum_range.high) / 2
    return lr, momentum, spec.lr_parameterization.effective_lr(lr, batch_size, momentum)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run_probe(spec: StudySpec, data: TrialData, args: argparse.Namespace, batch_size: int) -> dict[str, Any]:
    """Train the study's model briefly, estimating the noise scale at init and `args.points` times along the way."""
    started = time.perf_counter()
    lr, momentum, step_lr = probe_hyperparams(spec, batch_size)
    steps = args.train_examples // batch_size
    plan = TrainingPlan(batch_size, steps, step_lr, momentum, report_every_examples=steps * batch_size, seed=args.seed)
    torch.manual_seed(args.seed)
    model = build_model(spec, data).to(data.device, memory_format=data.memory_format)
    # The study's training step, optimizer and learning-rate schedule, exactly as a trial has them.
    training = training_step(spec, model, data.device)
    (optimizer,), (scheduler,) = TrialModule(training, plan, spec.optimizer, spec.schedule).configure_optimizers()

    print(
        f"probe    {spec.model.describe()} at batch size {batch_size}, lr {lr:.4g} (effective {step_lr:.4g}), momentum "
        f"{momentum:.3f}, for {steps * batch_size:,} examples ({steps} steps, augmentation on); gradient norms at "
        f"{args.small_batch} and {args.big_batch} examples, {args.measurements} big batches per point",
        flush=True,
    )
    model.train()  # batch norm as in training: each small chunk normalizes with its own statistics
    measure_batches = iter(data.train_batches(args.big_batch, args.seed + 1))
    train_batches = iter(data.train_batches(batch_size, args.seed))
    boundaries = [round(steps * k / args.points) for k in range(args.points + 1)]
    points: list[dict[str, Any]] = []
    step, losses = 0, []
    for boundary in boundaries:
        while step < boundary:
            optimizer.zero_grad(set_to_none=True)
            loss_sum = training.accumulate(next(train_batches), None, batch_size)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss_sum) / batch_size)
            step += 1
        point_started = time.perf_counter()
        estimate = noise_scale.estimate(training, measure_batches, args.small_batch, args.measurements)
        train_loss = statistics.fmean(losses) if losses else None
        losses = []
        points.append({
            "steps": step, "examples_seen": step * batch_size, "train_loss": train_loss,
            "gradient_sq": estimate.gradient_sq, "trace": estimate.trace,
            "b_simple": _finite(estimate.b_simple), "stderr": _finite(estimate.stderr),
        })
        print(_point_line(points[-1], time.perf_counter() - point_started), flush=True)
    sizes = spec.search_space.batch_sizes()
    critical = points[-1]["b_simple"]
    low, high = noise_scale.critical_range(critical) if critical else (None, None)
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "batch_size": batch_size, "lr": lr, "effective_lr": step_lr, "momentum": momentum,
        "train_examples": steps * batch_size, "augmentation": True, "seed": args.seed,
        "small_batch": args.small_batch, "big_batch": args.big_batch, "measurements": args.measurements,
        "points": points,
        "critical_batch_size": critical, "critical_stderr": points[-1]["stderr"],
        "suggested_range": [low, high] if critical else None,
        "suggested_batch_sizes": [b for b in sizes if low <= b <= high] if critical else [],
        "seconds": time.perf_counter() - started,
    }


def _point_line(point: dict[str, Any], seconds: float) -> str:
    where = "at initialization" if point["steps"] == 0 else f"after {point['examples_seen']:,} examples ({point['steps']} steps, train loss {point['train_loss']:.3f})"
    b_simple = (
        f"B_simple {point['b_simple']:,.0f} ± {point['stderr'] or math.nan:,.0f}" if point["b_simple"] is not None
        else "B_simple undefined (|G|^2 estimate not positive: more --measurements)"
    )
    return f"probe    {where}: |G|^2 {point['gradient_sq']:.4g}  tr(Sigma) {point['trace']:.4g}  {b_simple}  ({seconds:.1f} s)"


def prediction_lines(result: dict[str, Any]) -> list[str]:
    critical = result["critical_batch_size"]
    if critical is None:
        return ["no prediction: the last |G|^2 estimate is not positive; run again with more --measurements or a longer run."]
    low, high = result["suggested_range"]
    inside = ", ".join(f"{b:,}" for b in result["suggested_batch_sizes"]) or "none of the study's batch sizes"
    return [
        f"predicted critical batch size  B_crit ≈ B_simple = {critical:,.0f} ± {result['critical_stderr'] or math.nan:,.0f} "
        f"(after {result['train_examples']:,} examples)",
        f"suggested batch sizes to search  {low:,.0f} to {high:,.0f} (B_crit/8 to 2 B_crit): {inside}",
        "the noise scale grows as the loss falls, so over a full training run the critical batch size is likely larger.",
    ]





