"""Measuring a device's speed profile: examples/s of the real training step per batch size.

Each size is warmed up, then all sizes are timed in interleaved rounds, so a burst of load on a
shared machine hits every size alike. The profile turns a time budget into steps (`time_plan`),
and is stored on the study, one per device (`search.speed` is the command).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import torch

from search.config.spec import StudySpec
from search.data.source import TrialData
from search.errors import UserError
from search.measure.profile import NOISY_RATIO, REPEATS, SizeSpeed, SpeedProfile
from search.train.model import build_model, training_step
from search.train.optim import OptimizerStep
from search.train.plan import TrainingPlan

SMALLEST_SIZE = 8
# Timed seconds per batch size (all repeats together), and the warm-up before them: enough
# for a stable median on a tiny model, short enough that a whole profile takes seconds.
TIMED_SECONDS = 0.4
WARMUP_SECONDS = 0.1
# The whole profile stops adding larger sizes once it has spent this long...
PROFILE_SECONDS = 30.0
# Times a size whose windows disagree by more than NOISY_RATIO is timed again.
NOISY_RETRIES = 2
# ...or once throughput has fallen for two sizes in a row to below this share of the best:
# on a CPU larger batches only get slower, and measuring them costs the most.
FALLING_BELOW = 0.75
# On the CPU, sizes whose estimated memory would exceed this share of the free memory are skipped.
CPU_MEMORY_SHARE = 0.5
CPU_MEMORY_METHOD = (
    "estimate: tensors saved for backward + weights, gradients and momentum (saved-tensor hooks); "
    "a lower bound, allocator temporaries not counted"
)
CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated over the size's warm-up steps, less what other sizes held"








def profile_sizes(spec: StudySpec) -> list[int]:
    """Powers of two from the smallest batch size (at most 8) to the first at or above the largest."""
    sizes = spec.search_space.batch_sizes()
    size = 1 << (min(min(sizes), SMALLEST_SIZE).bit_length() - 1)
    result = [size]
    while result[-1] < max(sizes):
        result.append(result[-1] * 2)
    return result


def _free_memory_bytes() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class _StepRunner:
    """One optimizer step on the real path: augmented batches from the device data, the model as the study
    trains it, and the trials' own `OptimizerStep` (optimizer, schedule). The learning rate does not change a
    step's time; a small one keeps the weights finite however long the profile runs."""

    def __init__(self, spec: StudySpec, data: TrialData, batch_size: int) -> None:
        torch.manual_seed(0)
        self.model = build_model(spec, data).to(data.device, memory_format=data.memory_format).train()
        self.training = training_step(spec, self.model, data.device)
        plan = TrainingPlan(batch_size, steps=1_000_000, effective_lr=1e-4, momentum=0.9, report_every_examples=batch_size, seed=0)
        self.update = OptimizerStep(self.training, plan, spec.optimizer, spec.schedule)
        self.batches = iter(data.train_batches(batch_size, seed=0))
        self.batch_size = batch_size
        self.device = data.device

    def step(self) -> None:
        self.update.add(next(self.batches))

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, steps: int) -> float:
        self.sync()
        started = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.sync()
        return time.perf_counter() - started

    def state_bytes(self) -> int:
        """Weights, gradients and momentum buffers."""
        return 3 * sum(p.numel() * p.element_size() for p in self.model.parameters())

    def saved_bytes_step(self) -> int:
        """One step, counting the bytes autograd keeps for backward (the activations)."""
        saved = 0

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal saved
            saved += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            self.step()
        return saved


@dataclass
class _Candidate:
    """A warmed-up size awaiting its timed windows."""

    runner: _StepRunner
    batch_size: int
    step_seconds: float  # from the warm-up: sizes the timed windows
    peak_memory_bytes: int
    rates: list[float]

    @property
    def steps_per_repeat(self) -> int:
        return max(1, round(TIMED_SECONDS / REPEATS / self.step_seconds))


def _warm_up(runner: _StepRunner, batch_size: int) -> _Candidate:
    """At least two steps and WARMUP_SECONDS, so allocator and kernels settle; measures memory on the way."""
    on_cuda = runner.device.type == "cuda"
    if on_cuda:
        # The other sizes' models stay allocated: count from what was there before this one's weights.
        baseline = torch.cuda.memory_allocated(runner.device) - runner.state_bytes() // 3
        torch.cuda.reset_peak_memory_stats(runner.device)
        runner.step()
        memory = 0
    else:
        memory = runner.saved_bytes_step() + runner.state_bytes()
    warm, steps = runner.timed(1), 1
    while warm < WARMUP_SECONDS:
        warm += runner.timed(1)
        steps += 1
    if on_cuda:
        memory = torch.cuda.max_memory_allocated(runner.device) - baseline
    return _Candidate(runner, batch_size, warm / steps, memory, [])


def _stop_before(batch_size: int, warmed: list[_Candidate], spent: float, device: torch.device) -> str | None:
    """Why not to measure `batch_size` and anything larger, or None to go on."""
    last = warmed[-1]
    # Warm-up and timed windows of the next size cost about twice this one's (its steps are twice as long).
    next_cost = 2 * (WARMUP_SECONDS + TIMED_SECONDS + 2 * last.step_seconds)
    committed = sum(TIMED_SECONDS + c.step_seconds * REPEATS for c in warmed)
    if spent + committed + next_cost > PROFILE_SECONDS:
        return f"time limit: the {PROFILE_SECONDS:.0f} s profile would be exceeded by batch size {batch_size:,}"
    if device.type == "cpu" and 2 * last.peak_memory_bytes > CPU_MEMORY_SHARE * _free_memory_bytes():
        return f"batch size {batch_size:,} would need about {2 * last.peak_memory_bytes / 2**20:,.0f} MB, over half the free memory"
    rates = [c.batch_size / c.step_seconds for c in warmed]
    falling = len(rates) >= 3 and rates[-1] < rates[-2] < rates[-3]
    if falling and rates[-1] < FALLING_BELOW * max(rates):
        return (
            f"throughput fell two sizes in a row to {rates[-1] / max(rates):.0%} of the best in warm-up: larger sizes are "
            f"slower still on this device (rates beyond {last.batch_size:,} are extrapolated)"
        )
    return None


def measure(
    spec: StudySpec, data: TrialData, device_name: str, on_size: Callable[[SizeSpeed], None] | None = None,
) -> SpeedProfile:
    """Warm up every size in increasing order until the largest, memory, time or falling throughput stops it,
    then time them in interleaved rounds: on a shared machine a burst of load then hits every size alike."""
    started = time.perf_counter()
    warmed: list[_Candidate] = []
    sizes = profile_sizes(spec)
    stopped = f"reached the study's largest batch size ({max(spec.search_space.batch_sizes()):,})"
    for batch_size in sizes:
        reason = _stop_before(batch_size, warmed, time.perf_counter() - started, data.device) if warmed else None
        if reason:
            stopped = reason
            break
        try:
            warmed.append(_warm_up(_StepRunner(spec, data, batch_size), batch_size))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            stopped = f"out of memory at batch size {batch_size:,}"
            break
    if not warmed:
        raise UserError(f"Not even batch size {sizes[0]} fits on {device_name}: use a smaller model or a larger device.")
    # Sizes whose windows disagree (the device was busy) are timed again, up to NOISY_RETRIES times.
    pending = warmed
    for _ in range(1 + NOISY_RETRIES):
        for candidate in pending:
            candidate.rates = []
        for _ in range(REPEATS):
            for candidate in pending:
                steps = candidate.steps_per_repeat
                candidate.rates.append(steps * candidate.batch_size / candidate.runner.timed(steps))
        pending = [c for c in pending if max(c.rates) > NOISY_RATIO * min(c.rates)]
        if not pending:
            break
    measured = []
    for candidate in warmed:
        size = SizeSpeed(
            batch_size=candidate.batch_size,
            examples_per_second=statistics.median(candidate.rates),
            slowest=min(candidate.rates),
            fastest=max(candidate.rates),
            repeats=REPEATS,
            steps_per_repeat=candidate.steps_per_repeat,
            peak_memory_bytes=candidate.peak_memory_bytes,
        )
        measured.append(size)
        if on_size:
            on_size(size)
    return SpeedProfile(
        device=device_name,
        model=spec.model.describe(),
        sizes=tuple(measured),
        memory_method=CUDA_MEMORY_METHOD if data.device.type == "cuda" else CPU_MEMORY_METHOD,
        stopped=stopped,
        measured_at=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        seconds=time.perf_counter() - started,
    )


# -- storage on the study -------------------------------------------------------------------







# -- the time budget ------------------------------------------------------------------------
