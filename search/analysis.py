"""What a study says about batch size, in numbers and in plain words.

Pure functions of the study's trials (no plotting, no I/O), so `search.report` only renders
them and tests can check them on trials built by hand. Every claim is sized to the evidence:
a batch size with one completed trial is one draw of learning rate and momentum, not an
optimum, and the summary says so instead of drawing a trend through noise.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

# Batch sizes "as good as the best" are those within this fraction of the best loss.
NEAR_BEST = 0.01
# Fewer completed trials than this at a batch size: its best loss is only an upper bound.
WELL_EXPLORED = 3
# Reference exponents of learning-rate scaling rules, and how close counts as "close".
SCALING_RULES = {0.0: "no scaling (the same learning rate for every batch size)", 0.5: "square-root scaling", 1.0: "linear scaling"}
CLOSE_TO_RULE = 0.15
# Only batch sizes whose best loss is within this fraction of the best enter the exponent fit.
FIT_WITHIN = 0.25
# A standard error above this cannot tell linear from square-root scaling apart.
UNCERTAIN_EXPONENT = 0.35


@dataclass(frozen=True)
class BatchSizeResult:
    """The best a batch size reached under the fixed budget, and how many trials say so."""

    batch_size: int
    sampled: int  # trials of any state that drew this batch size
    completed: int
    best: FrozenTrial | None  # lowest final validation loss among completed trials
    best_val_acc: float | None  # highest final validation accuracy among completed trials

    @property
    def best_loss(self) -> float | None:
        return None if self.best is None else self.best.value

    @property
    def best_effective_lr(self) -> float | None:
        return None if self.best is None else self.best.user_attrs.get("effective_lr")

    @property
    def best_momentum(self) -> float | None:
        return None if self.best is None else self.best.params.get("momentum")


@dataclass(frozen=True)
class ScalingFit:
    """log(lr) = intercept + exponent * log(batch size), least squares over batch sizes."""

    exponent: float
    intercept: float
    points: int
    stderr: float | None  # None with two points: a slope through them, not a fit

    def lr_at(self, batch_size: float) -> float:
        return math.exp(self.intercept + self.exponent * math.log(batch_size))


@dataclass(frozen=True)
class PruningSavings:
    finished: int  # trials that trained (completed or pruned)
    pruned: int
    examples_trained: int
    examples_if_run_to_end: int

    @property
    def saved_fraction(self) -> float:
        return 1 - self.examples_trained / self.examples_if_run_to_end if self.examples_if_run_to_end else 0.0


@dataclass(frozen=True)
class EvaluationResult:
    """Test-set results of one configuration over several seeds."""

    source_trial: int
    batch_size: int
    lr: float
    effective_lr: float
    momentum: float
    val_loss: float | None  # the source trial's final validation loss in the search
    test_acc: list[float]
    test_loss: list[float]

    @property
    def seeds(self) -> int:
        return len(self.test_acc)


def _is_done(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and trial.value is not None and math.isfinite(trial.value)


def batch_sizes(trials: list[FrozenTrial]) -> list[int]:
    """Every batch size of the search space (from the stored distribution), measured or not."""
    sizes = {t.params["batch_size"] for t in trials if "batch_size" in t.params}
    for trial in trials:
        distribution = trial.distributions.get("batch_size")
        if isinstance(distribution, CategoricalDistribution):
            sizes.update(int(choice) for choice in distribution.choices)  # type: ignore[arg-type]
    return sorted(sizes)


def per_batch_size(trials: list[FrozenTrial]) -> list[BatchSizeResult]:
    results = []
    for size in batch_sizes(trials):
        drawn = [t for t in trials if t.params.get("batch_size") == size]
        done = [t for t in drawn if _is_done(t)]
        accuracies = [a for a in (t.user_attrs.get("final_val_acc") for t in done) if isinstance(a, float) and math.isfinite(a)]
        results.append(
            BatchSizeResult(
                batch_size=size,
                sampled=len(drawn),
                completed=len(done),
                best=min(done, key=lambda t: (t.value, t.number)) if done else None,
                best_val_acc=max(accuracies) if accuracies else None,
            )
        )
    return results


def fit_exponent(points: list[tuple[float, float]]) -> ScalingFit | None:
    """Fit y = c * x^k on log-log axes; None with fewer than two distinct x."""
    points = [(x, y) for x, y in points if x > 0 and y > 0]
    if len({x for x, _ in points}) < 2:
        return None
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    x_mean, y_mean = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - x_mean) ** 2 for x in xs)
    exponent = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys)) / sxx
    intercept = y_mean - exponent * x_mean
    stderr = None
    if len(points) > 2:
        residuals = sum((y - intercept - exponent * x) ** 2 for x, y in zip(xs, ys))
        stderr = math.sqrt(residuals / (len(points) - 2) / sxx)
    return ScalingFit(exponent, intercept, len(points), stderr)


def fitted_sizes(results: list[BatchSizeResult]) -> list[BatchSizeResult]:
    """Batch sizes whose best loss is within `FIT_WITHIN` of the overall best.

    Far from it, the best trial is a poor optimum (or one that barely learned), and the
    learning rate it happened to draw says nothing about how the optimum scales.
    """
    measured = [r for r in results if r.best is not None and r.best_effective_lr is not None]
    if not measured:
        return []
    floor = min(r.best_loss for r in measured)  # type: ignore[type-var]
    return [r for r in measured if r.best_loss <= floor + abs(floor) * FIT_WITHIN]  # type: ignore[operator]


def lr_fits(results: list[BatchSizeResult]) -> tuple[ScalingFit | None, ScalingFit | None]:
    """Exponents of the optimizer's learning rate, and of lr / (1 - momentum), against batch size.

    The second is the step size momentum SGD takes in the long run: when the best momentum
    moves with batch size, it is the fairer measure of how the step should scale.
    """
    best = fitted_sizes(results)
    plain = fit_exponent([(r.batch_size, r.best_effective_lr) for r in best])  # type: ignore[misc]
    adjusted = fit_exponent([(r.batch_size, r.best_effective_lr / (1 - r.best_momentum)) for r in best])  # type: ignore[operator]
    return plain, adjusted


def examples_at_end(trial: FrozenTrial, budget_examples: int) -> int:
    """What the trial trains if nothing stops it: whole steps of its batch size within the budget."""
    batch_size = int(trial.params.get("batch_size", 1))
    if "budget_seconds" in trial.user_attrs:  # a time budget: the steps planned from the speed profile
        return int(trial.user_attrs["steps"]) * batch_size
    return budget_examples // batch_size * batch_size


def pruning_savings(trials: list[FrozenTrial], budget_examples: int) -> PruningSavings:
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return PruningSavings(
        finished=len(finished),
        pruned=sum(t.state == TrialState.PRUNED for t in finished),
        examples_trained=sum(int(t.user_attrs.get("examples_seen", 0)) for t in finished),
        examples_if_run_to_end=sum(examples_at_end(t, budget_examples) for t in finished),
    )


def near_best(results: list[BatchSizeResult], tolerance: float = NEAR_BEST) -> list[int]:
    measured = [r for r in results if r.best_loss is not None]
    if not measured:
        return []
    floor = min(r.best_loss for r in measured)  # type: ignore[type-var]
    return [r.batch_size for r in measured if r.best_loss <= floor + abs(floor) * tolerance]  # type: ignore[operator]


def evaluation_results(source: list[FrozenTrial], runs: list[FrozenTrial]) -> list[EvaluationResult]:
    """Group completed test-set runs by the search trial they retrain, best search trial first."""
    by_number = {t.number: t for t in source}
    grouped: dict[int, list[FrozenTrial]] = {}
    for run in runs:
        if run.state == TrialState.COMPLETE and "source_trial" in run.user_attrs:
            grouped.setdefault(run.user_attrs["source_trial"], []).append(run)
    results = []
    for number, group in grouped.items():
        first = group[0]
        origin = by_number.get(number)
        results.append(
            EvaluationResult(
                source_trial=number,
                batch_size=first.params["batch_size"],
                lr=first.params["lr"],
                effective_lr=first.user_attrs["effective_lr"],
                momentum=first.params["momentum"],
                val_loss=origin.value if origin is not None else None,
                test_acc=[r.user_attrs["test_acc"] for r in group],
                test_loss=[r.user_attrs["test_loss"] for r in group],
            )
        )
    return sorted(results, key=lambda r: (r.val_loss is None, r.val_loss, r.source_trial))


def mean_and_spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value: no spread to speak of)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def mean_spread_text(values: list[float]) -> str:
    """"0.7123 ± 0.0041", or "0.7123 (one seed)" when there is no spread to show."""
    mean, spread = mean_and_spread(values)
    return f"{mean:.4f} ± {spread:.4f}" if spread is not None else f"{mean:.4f} (one seed)"


# -- the plain-language summary ------------------------------------------------------------

def _sizes(sizes: list[int]) -> str:
    return ", ".join(f"{b:,}" for b in sizes)


def _percent(fraction: float) -> str:
    return f"{fraction:+.1%}" if abs(fraction) < 0.1 else f"{fraction:+.0%}"


def _range_text(near: list[int], measured: list[int]) -> str:
    """"batch sizes 64 to 256" when contiguous among the measured ones, else a list."""
    positions = [measured.index(b) for b in near]
    if positions == list(range(positions[0], positions[-1] + 1)):
        return f"batch sizes {near[0]:,} to {near[-1]:,}"
    return f"batch sizes {_sizes(near)} (not contiguous: the ones in between did worse)"


def _rule_words(exponent: float, stderr: float) -> str:
    nearest = min(SCALING_RULES, key=lambda k: abs(k - exponent))
    if abs(exponent - nearest) <= max(CLOSE_TO_RULE, stderr):
        return f"close to {SCALING_RULES[nearest]} (exponent {nearest:g})"
    if exponent > 1:
        return "steeper than linear scaling (exponent 1)"
    if exponent > 0.5:
        return "between square-root (0.5) and linear scaling (1)"
    if exponent > 0:
        return "between no scaling (0) and square-root scaling (0.5)"
    return "falling as batch size grows, unlike any usual rule"


def _scaling_words(fit: ScalingFit | None, fitted: list[BatchSizeResult]) -> str:
    if fit is None:
        return (
            f"Fewer than two batch sizes come within {FIT_WITHIN:.0%} of the best loss, so no learning-rate scaling "
            f"exponent can be fitted."
        )
    if fit.stderr is None:
        return (
            f"Between the two batch sizes fitted the best learning rate changes as B^{fit.exponent:.2f}; with two points "
            f"this is a slope, not a fit, and says little about a scaling rule."
        )
    words = f"The best learning rate grows as B^{fit.exponent:.2f} (±{fit.stderr:.2f} standard error, fitted over {fit.points} batch sizes)"
    if fit.stderr > UNCERTAIN_EXPONENT:
        words += ": too uncertain to tell the scaling rules (exponent 1 linear, 0.5 square root) apart."
    else:
        words += f": {_rule_words(fit.exponent, fit.stderr)}."
    if sum(r.completed < WELL_EXPLORED for r in fitted) * 2 > len(fitted):
        words += " Most points are the best of one or two trials, so take it as a rough indication, not a measurement."
    return words


def summary(
    trials: list[FrozenTrial],
    results: list[BatchSizeResult],
    fits: tuple[ScalingFit | None, ScalingFit | None],
    savings: PruningSavings,
    evaluation: list[EvaluationResult],
) -> list[str]:
    """A few sentences answering "what difference does batch size make here?" from these numbers."""
    done = [t for t in trials if _is_done(t)]
    measured = [r for r in results if r.best is not None]
    lines = []
    if not measured:
        return ["No trial has completed yet, so the study cannot say anything about batch size."]
    best = min(measured, key=lambda r: r.best_loss)  # type: ignore[arg-type, return-value]
    if len(measured) == 1:
        lines.append(
            f"Only batch size {best.batch_size:,} has a completed trial ({len(done)} completed of {len(trials)}), so the "
            f"study cannot yet say what difference batch size makes. Run more trials."
        )
    else:
        near = near_best(results)
        sizes = [r.batch_size for r in measured]
        if len(near) == 1:
            within = f"no other batch size comes within {NEAR_BEST:.0%} of it"
        else:
            within = f"{_range_text(near, sizes)} come within {NEAR_BEST:.0%} of it"
        lines.append(
            f"The lowest validation loss, {best.best_loss:.4f}, was reached at batch size {best.batch_size:,}; {within}."
        )
        below = [r for r in reversed(measured) if r.batch_size < near[0]]
        above = [r for r in measured if r.batch_size > near[-1]]
        where = "that range" if len(near) > 1 else "it"
        for label, side in ((f"Below {where}", below), (f"Above {where}", above)):
            if side:
                rises = ", ".join(f"{_percent(r.best_loss / best.best_loss - 1)} at {r.batch_size:,}" for r in side)  # type: ignore[operator]
                lines.append(f"{label} the best loss rises: {rises}.")
        fitted = fitted_sizes(results)
        left_out = [r for r in measured if r not in fitted]
        lines.append(_scaling_words(fits[0], fitted))
        if left_out:
            lines.append(
                "Left out of that fit, as more than "
                f"{FIT_WITHIN:.0%} worse than the best loss (a poor optimum says little about the best learning rate): "
                + ", ".join(f"batch size {r.batch_size:,} ({_percent(r.best_loss / best.best_loss - 1)})" for r in left_out)  # type: ignore[operator]
                + "."
            )
        if fits[0] is not None and fits[0].stderr is not None and fits[0].stderr <= UNCERTAIN_EXPONENT and fits[1] is not None:
            lines.append(
                f"Counting momentum (lr / (1 - momentum), the long-run step of momentum SGD), the exponent is {fits[1].exponent:.2f}."
            )
    thin = [r.batch_size for r in measured if r.completed < WELL_EXPLORED]
    if thin:
        which = f"Batch sizes {_sizes(thin)} have" if len(thin) > 1 else f"Batch size {thin[0]:,} has"
        lines.append(
            f"{which} fewer than {WELL_EXPLORED} completed trials: the best loss there is one or two draws of learning rate "
            f"and momentum, an upper bound on what that batch size can reach, and its best learning rate is noisy."
        )
    missing = [r for r in results if r.best is None]
    if missing:
        lines.append(
            "No trial completed at batch sizes "
            + ", ".join(f"{r.batch_size:,} ({r.sampled} sampled)" for r in missing)
            + ": nothing can be said about them."
        )
    if savings.finished:
        lines.append(
            f"Pruning stopped {savings.pruned} of {savings.finished} trials early: they trained {savings.examples_trained:,} "
            f"examples in all instead of {savings.examples_if_run_to_end:,} had every trial run to the end "
            f"({savings.saved_fraction:.0%} saved)."
        )
    if evaluation:
        top = evaluation[0]
        lines.append(
            f"On the held-out test set, the best configuration (trial {top.source_trial}, batch size {top.batch_size:,}), "
            f"retrained on the full training split, reaches accuracy {mean_spread_text(top.test_acc)} "
            f"(mean ± standard deviation over {top.seeds} seed{'s' if top.seeds > 1 else ''})."
        )
    return lines


# -- the two speeds: loss per example and loss per second ------------------------------------

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
    attrs = trial.user_attrs
    rate = attrs.get("examples_per_second") or math.nan
    per_step = attrs["report_every_examples"] / attrs["report_every_ms"] if "report_every_ms" in attrs else 1.0
    losses = {round(step * per_step): value for step, value in trial.intermediate_values.items()}
    final = attrs.get("final_val_loss")
    if isinstance(final, float) and "examples_seen" in attrs:
        losses.setdefault(int(attrs["examples_seen"]), final)
    return [CurvePoint(e, e / rate, v) for e, v in sorted(losses.items()) if math.isfinite(v)]


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
    done = [t for t in trials if _is_done(t)]
    if target_loss is None:
        if not done:
            return []
        best = min(t.value for t in done)  # type: ignore[type-var]
        target_loss = best + abs(best) * TARGET_MARGIN  # type: ignore[operator]
    by_device: dict[str, dict[int, list[list[CurvePoint]]]] = {}
    for trial in trials:
        timed = trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and trial.user_attrs.get("examples_per_second")
        points = trial_points(trial) if timed else []
        if points:
            device = by_device.setdefault(str(trial.user_attrs.get("device", "unknown device")), {})
            device.setdefault(int(trial.params["batch_size"]), []).append(points)
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
            f" With fewer than {WELL_EXPLORED} trials at batch size{'s' if len(thin) > 1 else ''} {_sizes(thin)}, each of these is one or two draws of "
            f"learning rate and momentum: an indication, not a measurement."
        )
    return f"{time_part}; {examples_part}.{caveat}"


# -- what the literature predicts: the gradient noise scale and sharp minima -------------------

# `search.probe` stores each run on the study under this prefix and its UTC time.
PROBE_PREFIX = "noise_scale_probe:"
# The empirical knee: the largest batch size whose best loss is within this fraction of the best.
KNEE_WITHIN = 0.05
# Prediction and knee "agree" when they are within this factor of each other (one power of two).
AGREE_FACTOR = 2.0


def latest_probe(study_attrs: dict[str, object]) -> dict[str, object] | None:
    """The newest noise-scale probe stored on the study (keys sort by their UTC time)."""
    keys = sorted(k for k in study_attrs if k.startswith(PROBE_PREFIX))
    return study_attrs[keys[-1]] if keys else None  # type: ignore[return-value]


def empirical_knee(results: list[BatchSizeResult], tolerance: float = KNEE_WITHIN) -> int | None:
    """The largest batch size whose best final validation loss is within `tolerance` of the best."""
    measured = [r for r in results if r.best_loss is not None]
    if not measured:
        return None
    floor = min(r.best_loss for r in measured)  # type: ignore[type-var]
    return max(r.batch_size for r in measured if r.best_loss <= floor + abs(floor) * tolerance)  # type: ignore[operator]


def diagnosed(trials: list[FrozenTrial], key: str) -> list[tuple[int, float]]:
    """(batch size, value of user attribute `key`) for completed trials that have a finite one."""
    return [
        (int(t.params["batch_size"]), float(t.user_attrs[key])) for t in trials
        if _is_done(t) and isinstance(t.user_attrs.get(key), (int, float)) and math.isfinite(t.user_attrs[key])
    ]


def median_by_size(points: list[tuple[int, float]]) -> dict[int, float]:
    sizes = sorted({b for b, _ in points})
    return {b: statistics.median(v for s, v in points if s == b) for b in sizes}


def diagnostics_summary(trials: list[FrozenTrial], results: list[BatchSizeResult], probe: dict[str, object] | None) -> list[str]:
    """What the noise-scale probe predicted against the knee, and how sharpness and the gap move with batch size."""
    lines = []
    knee = empirical_knee(results)
    critical = probe.get("critical_batch_size") if probe else None
    if probe is None:
        lines.append("No noise-scale probe has been run on this study: `python -m search.probe --study NAME` predicts the critical batch size.")
    elif not isinstance(critical, (int, float)):
        lines.append("The noise-scale probe could not estimate the noise scale (its |G|^2 estimate was not positive).")
    else:
        low, high = probe["suggested_range"]  # type: ignore[misc]
        words = (
            f"The gradient noise scale probe (McCandlish et al. 2018) measured B_simple = {critical:,.0f} after "
            f"{probe['train_examples']:,} examples at batch size {probe['batch_size']:,}, predicting a critical batch size "
            f"of about {critical:,.0f} and a useful search range of {low:,.0f} to {high:,.0f}."
        )
        if knee is not None:
            agree = 1 / AGREE_FACTOR <= knee / critical <= AGREE_FACTOR
            words += (
                f" The empirical knee, the largest batch size whose best loss is within {KNEE_WITHIN:.0%} of the best, is "
                f"{knee:,}: {'within' if agree else 'not within'} a factor {AGREE_FACTOR:g} of the prediction"
                f"{'' if agree else (', larger' if knee > critical else ', smaller')}."
            )
        lines.append(words)
    # A trial that barely learned sits on a flat plateau: its sharpness says nothing about minima.
    losses = [t.value for t in trials if _is_done(t)]
    good = [t for t in trials if _is_done(t) and t.value <= min(losses) + abs(min(losses)) * FIT_WITHIN]  # type: ignore[operator]
    for key, what in (("sharpness", "Sharpness (the top Hessian eigenvalue of the training loss)"), ("generalization_gap", "The generalization gap (validation minus training-subset loss)")):
        medians = median_by_size(diagnosed(good, key))
        if len(medians) >= 2:
            (small, first), (large, last) = next(iter(medians.items())), list(medians.items())[-1]
            lines.append(
                f"{what} is {first:.3g} at batch size {small:,} and {last:.3g} at {large:,} (median of the completed trials "
                f"within {FIT_WITHIN:.0%} of the best loss)."
            )
    return lines


# -- batch-size schedules: decay the learning rate or grow the batch -------------------------

@dataclass(frozen=True)
class ScheduleRow:
    """One starting batch size: per schedule, completed/sampled trials and the best final loss."""

    batch_size: int
    sampled: dict[str, int]
    completed: dict[str, int]
    best_loss: dict[str, float | None]


def schedule_comparison(trials: list[FrozenTrial]) -> list[ScheduleRow]:
    """Best loss per starting batch size and schedule; empty unless the study sampled the schedule."""
    schedules = sorted({str(t.params["schedule"]) for t in trials if "schedule" in t.params})
    if len(schedules) < 2:
        return []
    rows = []
    for size in batch_sizes(trials):
        drawn = {s: [t for t in trials if t.params.get("batch_size") == size and t.params.get("schedule") == s] for s in schedules}
        done = {s: [t for t in drawn[s] if _is_done(t)] for s in schedules}
        rows.append(
            ScheduleRow(
                batch_size=size,
                sampled={s: len(drawn[s]) for s in schedules},
                completed={s: len(done[s]) for s in schedules},
                best_loss={s: min((float(t.value) for t in done[s]), default=None) for s in schedules},  # type: ignore[arg-type]
            )
        )
    return rows


def schedule_sentence(rows: list[ScheduleRow]) -> str | None:
    """Which schedule reached the lower best loss, counted over the batch sizes where both completed."""
    if not rows:
        return None
    both = [r for r in rows if all(v is not None for v in r.best_loss.values())]
    if not both:
        return "The batch-size schedules cannot be compared yet: no starting batch size has a completed trial under both."
    grow_wins = [r.batch_size for r in both if r.best_loss["grow_batch"] < r.best_loss["decay_lr"]]  # type: ignore[operator]
    change = statistics.median(r.best_loss["grow_batch"] / r.best_loss["decay_lr"] - 1 for r in both)  # type: ignore[operator]
    return (
        f"Growing the batch at a fixed learning rate (grow_batch) reached a lower best loss than decaying the learning rate "
        f"(decay_lr) at {len(grow_wins)} of the {len(both)} starting batch sizes where both completed"
        f"{' (' + _sizes(grow_wins) + ')' if grow_wins else ''}; the median change in best loss is {_percent(change)}. "
        f"Each cell is the best of few trials, so read small differences as noise."
    )
