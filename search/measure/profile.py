"""A device's speed profile per batch size: a plain record (no torch), stored on the study and read by the report."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

PROFILE_ATTR_PREFIX = "speed_profile:"


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


def fastest_micro_batch(profile: SpeedProfile, batch_size: int) -> int:
    """The power-of-two micro-batch that divides `batch_size` with the highest measured examples/s.

    Falls back to `batch_size` itself when no measured size divides it.
    """
    candidates = [s for s in profile.sizes if s.batch_size <= batch_size and batch_size % s.batch_size == 0]
    return max(candidates, key=lambda s: s.examples_per_second).batch_size if candidates else batch_size
