"""A fixed training time per trial, turned into step counts with the device's speed profile.

The step count, fixed before the trial from a predicted rate (stored on the trial), not the live
clock, is what trains: the learning-rate schedule completes (see the README, "The two speeds").
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from search.config.spec import StudySpec
from search.errors import UserError
from search.measure.profile import SpeedProfile
from search.train.plan import TrainingPlan


def time_budget_steps(seconds: float, profile: SpeedProfile, batch_size: int, micro_batch_size: int | None = None) -> int:
    """Optimizer steps that take `seconds` at the profile's rate: the count, not the clock, is what trains."""
    return math.floor(seconds * profile.rate(micro_batch_size or batch_size) / batch_size)


def time_plan(plan: TrainingPlan, spec: StudySpec, profile: SpeedProfile) -> tuple[TrainingPlan, dict[str, Any]]:
    """A trial's steps and checkpoints under `budget_seconds`, and the attributes that record the prediction.

    Steps and checkpoint steps are fixed from the stored profile, never from the live clock,
    so the learning-rate schedule completes and a rerun trains exactly the same steps. The
    rate is that of the micro-batch the step runs in. Checkpoint k falls after
    round(k x report_every_ms x rate / batch size) steps: at equal predicted time for every
    batch size, to within half a step.
    """
    assert spec.budget_seconds is not None
    rate = profile.rate(plan.micro_batch_size or plan.batch_size)
    steps = time_budget_steps(spec.budget_seconds, profile, plan.batch_size, plan.micro_batch_size)
    steps_per_checkpoint = max(1, round(spec.report_every_ms() / 1000 * rate / plan.batch_size))
    timing = {
        "budget_seconds": spec.budget_seconds,
        "predicted_examples_per_second": rate,
        "predicted_seconds": steps * plan.batch_size / rate,
        "report_every_examples": steps_per_checkpoint * plan.batch_size,
        "report_every_ms": spec.report_every_ms(),
    }
    return replace(plan, steps=steps, report_every_examples=steps_per_checkpoint * plan.batch_size), timing


def check_time_budget(spec: StudySpec, profile: SpeedProfile) -> None:
    """In time mode, every batch size must get `min_steps` steps on this device (the profile decides)."""
    assert spec.budget_seconds is not None
    short = {b: time_budget_steps(spec.budget_seconds, profile, b) for b in spec.search_space.batch_sizes()}
    short = {b: steps for b, steps in short.items() if steps < spec.min_steps}
    if short:
        needed = max(spec.min_steps * b / profile.rate(b) for b in short)
        raise UserError(
            f"budget_seconds {spec.budget_seconds:g} gives fewer than min_steps={spec.min_steps} steps on {profile.device} to "
            f"batch sizes {', '.join(f'{b:,} ({s} steps)' for b, s in short.items())}; raise --budget-seconds to at least "
            f"{math.ceil(needed)}, lower the largest batch size, or lower min_steps."
        )
