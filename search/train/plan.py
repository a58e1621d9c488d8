"""A trial's training plan: its steps within the budget, learning-rate schedule, batch growth and splitting."""
from __future__ import annotations

import math
from dataclasses import dataclass

from search.config.spec import ScheduleSpec, StudySpec
from search.record import Hyperparams


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

    def schedule_steps(self) -> int:
        """The steps the learning-rate schedule spans, in starting-size batches: a growing batch warms up over the same examples."""
        return self.examples_after(self.steps) // self.batch_size


def warmup_steps(steps: int, batch_size: int, schedule: ScheduleSpec) -> int:
    """Warm-up steps of a schedule over `steps` of `batch_size` examples. With `warmup_examples`: that many
    examples' steps (the same share of the budget at every batch size), at least one and at most a quarter of
    the steps. Otherwise `warmup_fraction` of the steps, but at least `warmup_min_steps` (a fraction of a few steps
    is no warm-up at all), a floor that never takes more than a quarter of the steps: at large batch sizes the floor
    is a larger share of the budget than at small ones."""
    if schedule.warmup_examples is not None:
        return min(max(1, round(schedule.warmup_examples / batch_size)), max(1, steps // 4))
    return max(round(schedule.warmup_fraction * steps), min(schedule.warmup_min_steps, steps // 4))


def lr_factor(step: int, steps: int, batch_size: int, schedule: ScheduleSpec) -> float:
    """Warm-up then decay, both over this trial's own step count, reaching zero at the end."""
    warmup = warmup_steps(steps, batch_size, schedule)
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
    warmup = warmup_steps(steps, batch_size, schedule)
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
