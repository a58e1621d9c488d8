"""A device's speed profile per batch size: a plain record (no torch), stored on the study by `search.store.measurements`
(one per device), read by the trials, the time budget and the report."""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, replace
from typing import Any

PROFILE_ATTR_PREFIX = "speed_profile:"
# Timed windows per size: the profile keeps their median, slowest and fastest.
REPEATS = 5
# Windows of one size this far apart mean the device was shared while measuring.
NOISY_RATIO = 2.0


@dataclass(frozen=True)
class SizeSpeed:
    """One micro-batch size: examples/s over `repeats` timed windows of `steps_per_repeat` steps."""

    batch_size: int
    examples_per_second: float  # median over the windows
    slowest: float
    fastest: float
    repeats: int
    steps_per_repeat: int
    peak_memory_bytes: int

    @property
    def spread(self) -> float:
        """(fastest - slowest) / median: the run-to-run noise of this figure."""
        return (self.fastest - self.slowest) / self.examples_per_second


@dataclass(frozen=True)
class SpeedProfile:
    device: str
    model: str
    sizes: tuple[SizeSpeed, ...]
    memory_method: str
    stopped: str  # why no larger size was measured
    measured_at: str
    seconds: float  # what measuring took

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SpeedProfile:
        return cls(**{**raw, "sizes": tuple(SizeSpeed(**s) for s in raw["sizes"])})

    def rate(self, batch_size: int) -> float:
        """Predicted examples/s at any batch size: log-log interpolation between measured sizes.

        Outside the measured range the nearest end's rate is used: no extrapolation from a
        slope that the noise of two points sets. (Larger sizes on a CPU are then predicted a
        little fast, on a GPU a little slow; the trials record their actual seconds.)
        """
        measured = sorted((s.batch_size, s.examples_per_second) for s in self.sizes)
        if batch_size <= measured[0][0]:
            return measured[0][1]
        if batch_size >= measured[-1][0]:
            return measured[-1][1]
        (b0, r0), (b1, r1) = next((left, right) for left, right in zip(measured, measured[1:]) if right[0] >= batch_size)
        if batch_size == b1:
            return r1
        fraction = math.log(batch_size / b0) / math.log(b1 / b0)
        return math.exp(math.log(r0) + fraction * math.log(r1 / r0))

    def fastest(self) -> SizeSpeed:
        return max(self.sizes, key=lambda s: s.examples_per_second)

    def noisy_sizes(self) -> list[int]:
        """Sizes whose fastest window ran over NOISY_RATIO x the slowest: measured on a busy device."""
        return [s.batch_size for s in self.sizes if s.fastest > NOISY_RATIO * s.slowest]

    def corrected(self, observed: dict[int, float]) -> SpeedProfile:
        """The profile with the rates trials actually trained at (examples/s by micro-batch size).

        What a trial measures over a whole run outweighs seconds of profiling, which a burst of
        load, or a trial's own overhead on a tiny model, can put off several-fold. Observed sizes
        take their observed rate; the others are scaled by the median observed/profiled ratio.
        A corrected size has repeats=0: it comes from trials, not from timed windows.
        """
        if not observed:
            return self
        ratio = statistics.median(rate / self.rate(size) for size, rate in observed.items())
        sizes = {s.batch_size: replace(s, examples_per_second=s.examples_per_second * ratio, repeats=0) for s in self.sizes}
        for size, rate in observed.items():
            known = sizes.get(size)
            sizes[size] = SizeSpeed(size, rate, rate, rate, 0, 0, known.peak_memory_bytes if known else 0)
        return replace(self, sizes=tuple(sizes[b] for b in sorted(sizes)))

def fastest_micro_batch(profile: SpeedProfile, batch_size: int) -> int:
    """The power-of-two micro-batch that divides `batch_size` with the highest measured examples/s.

    Falls back to `batch_size` itself when no measured size divides it.
    """
    candidates = [s for s in profile.sizes if s.batch_size <= batch_size and batch_size % s.batch_size == 0]
    return max(candidates, key=lambda s: s.examples_per_second).batch_size if candidates else batch_size


def format_table(profile: SpeedProfile) -> str:
    fastest = profile.fastest()
    lines = [
        f"speed profile of {profile.model} on {profile.device} ({profile.measured_at}, took {profile.seconds:.1f} s): "
        f"a full training step, median of {REPEATS} interleaved timed windows after warm-up",
        f"{'batch':>7}  {'examples/s':>10}  {'spread':>7}  {'slowest':>9}  {'fastest':>9}  {'step ms':>8}  {'peak memory':>11}",
    ]
    for s in profile.sizes:
        lines.append(
            f"{s.batch_size:>7,}  {s.examples_per_second:>10,.0f}  {s.spread:>7.1%}  {s.slowest:>9,.0f}  {s.fastest:>9,.0f}  "
            f"{1000 * s.batch_size / s.examples_per_second:>8.1f}  {s.peak_memory_bytes / 2**20:>8,.1f} MB"
            + ("  <- fastest" if s is fastest else "")
        )
    noisy = profile.noisy_sizes()
    if noisy:
        lines.append(
            f"noisy: at batch sizes {', '.join(map(str, noisy))} the fastest window ran over {NOISY_RATIO:g}x the slowest; "
            f"the device is busy with other work: measure again when it is idle (python -m search.speed)"
        )
    lines.append(f"largest size: {profile.stopped}")
    lines.append(f"peak memory: {profile.memory_method}")
    return "\n".join(lines)
