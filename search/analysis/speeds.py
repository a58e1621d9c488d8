"""The two speeds: the best loss reached by each number of examples, and by each training second.

Also the devices' stored speed profiles (`search.measure.profile`), read without torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from search.analysis.per_batch_size import WELL_EXPLORED
from search.analysis.pruning import finished
from search.analysis.trials import loss_bound
from search.analysis.wording import sizes_text
from search.record import Hyperparams, TrialRecord, is_finite
from search.store.trials import is_completed

# Without --target-loss, the target is the study's best final validation loss plus this margin.
TARGET_MARGIN = 0.05


@dataclass(frozen=True)
class CurvePoint:
    """One validation of one trial: where it was in examples and in (estimated) training seconds."""

    examples: int
    seconds: float
    val_loss: float


@dataclass(frozen=True)
class DeviceSpeeds:
    """Per batch size on one device: the best loss reached by each number of examples and of seconds."""

    device: str
    target_loss: float
    trials: dict[int, int]  # batch size -> finished trials with validations
    by_examples: dict[int, list[tuple[float, float]]]  # batch size -> (examples, best loss so far)
    by_seconds: dict[int, list[tuple[float, float]]]  # batch size -> (seconds, best loss so far)
    seconds_to_target: dict[int, float | None]
    common_examples: float | None  # the most examples every batch size here reached
    loss_at_common_examples: dict[int, float]


def trial_points(trial: FrozenTrial) -> list[CurvePoint]:
    """The trial's validations, with seconds = examples / its measured training examples/s (NaN unknown).

    An estimate: validation time is left out and the rate is taken as constant over the
    trial. With a time budget, reports are keyed by predicted milliseconds, converted back
    to examples with the trial's own checkpoint spacing.
    """
    record = TrialRecord.of(trial)
    rate = record.examples_per_second or math.nan
    per_step = record.report_every_examples / record.report_every_ms if record.report_every_examples and record.report_every_ms else 1.0
    losses = {round(step * per_step): value for step, value in trial.intermediate_values.items()}
    if record.final_val_loss is not None and record.examples_seen is not None:
        losses.setdefault(int(record.examples_seen), record.final_val_loss)
    return [CurvePoint(e, e / rate, v) for e, v in sorted(losses.items()) if is_finite(v)]


def _best_so_far(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    best, envelope = math.inf, {}
    for x, loss in sorted(points):
        best = min(best, loss)
        envelope[x] = best
    return list(envelope.items())


def _at(envelope: list[tuple[float, float]], x: float) -> float:
    """The best loss reached by `x` (inf before the first validation)."""
    return min((loss for px, loss in envelope if px <= x), default=math.inf)


def two_speeds(trials: list[FrozenTrial], target_loss: float | None = None) -> list[DeviceSpeeds]:
    """One `DeviceSpeeds` per device that ran trials; the target defaults to the best loss + TARGET_MARGIN."""
    if target_loss is None:
        done = [t.value for t in trials if is_completed(t)]
        if not done:
            return []
        target_loss = loss_bound(min(done), TARGET_MARGIN)  # type: ignore[type-var]
    by_device: dict[str, dict[int, list[list[CurvePoint]]]] = {}
    for trial in finished(trials):
        record = TrialRecord.of(trial)
        points = trial_points(trial) if record.examples_per_second else []
        if points:
            device = by_device.setdefault(record.device or "unknown device", {})
            device.setdefault(Hyperparams.of(trial).batch_size, []).append(points)
    result = []
    for device, curves in sorted(by_device.items()):
        sizes = sorted(curves)
        by_examples = {b: _best_so_far([(p.examples, p.val_loss) for c in curves[b] for p in c]) for b in sizes}
        by_seconds = {b: _best_so_far([(p.seconds, p.val_loss) for c in curves[b] for p in c]) for b in sizes}
        reach = {b: next((s for s, loss in by_seconds[b] if loss <= target_loss), None) for b in sizes}
        common = min(by_examples[b][-1][0] for b in sizes)
        result.append(
            DeviceSpeeds(
                device=device,
                target_loss=target_loss,
                trials={b: len(curves[b]) for b in sizes},
                by_examples=by_examples,
                by_seconds=by_seconds,
                seconds_to_target=reach,
                common_examples=common,
                loss_at_common_examples={b: _at(by_examples[b], common) for b in sizes if math.isfinite(_at(by_examples[b], common))},
            )
        )
    return result


def two_speeds_sentence(speeds: DeviceSpeeds) -> str:
    """'On <device>, batch size X reaches loss L in the least time; at a fixed number of examples batch size Y is best.'"""
    reached = sorted((s, b) for b, s in speeds.seconds_to_target.items() if s is not None)
    target = f"loss {speeds.target_loss:.4f}"
    if not reached:
        time_part = f"On {speeds.device}, no batch size has reached {target} yet"
    elif len(reached) == 1:
        seconds, size = reached[0]
        time_part = (
            f"On {speeds.device}, only batch size {size:,} reached {target} (in {seconds:.1f} s of training), so there is "
            f"nothing to compare its time with"
        )
    else:
        (seconds, size), (runner_seconds, runner) = reached[0], reached[1]
        time_part = (
            f"On {speeds.device}, batch size {size:,} reaches {target} in the least time ({seconds:.1f} s of training; "
            f"next batch size {runner:,} in {runner_seconds:.1f} s)"
        )
    losses = speeds.loss_at_common_examples
    if len(losses) < 2:
        examples_part = (
            f"{'only batch size ' + format(next(iter(losses)), ',') if losses else 'no batch size'} had been validated by "
            f"{speeds.common_examples:,.0f} examples (the most every batch size here reached), so none can be called "
            f"best at a fixed number of examples"
        )
    else:
        best = min(losses, key=losses.__getitem__)
        examples_part = (
            f"at a fixed number of examples ({speeds.common_examples:,.0f}, the most every batch size here reached) batch size "
            f"{best:,} is best (loss {losses[best]:.4f})"
        )
    thin = [b for b, n in speeds.trials.items() if n < WELL_EXPLORED]
    caveat = ""
    if thin:
        caveat = (
            f" With fewer than {WELL_EXPLORED} trials at batch size{'s' if len(thin) > 1 else ''} {sizes_text(thin)}, each of these is one or two draws of "
            f"learning rate and momentum: an indication, not a measurement."
        )
    untested = " Both are bests over each batch size's trials, without an interval: an ordering, not a tested difference."
    return f"{time_part}; {examples_part}.{caveat}{untested if len(losses) > 1 or len(reached) > 1 else ''}"
