"""The report's figures: matplotlib PNGs of what `search.analysis` computes (no torch)."""
from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from search.analysis.critical import CriticalBatch  # noqa: E402
from search.analysis.diagnostics import (  # noqa: E402
    DIAGNOSTICS,
    compared_trials,
    diagnosed,
    median_by_size,
)
from search.analysis.frontier import ExponentFit, FrontierRow, with_interval  # noqa: E402
from search.analysis.per_batch_size import BatchSizeResult  # noqa: E402
from search.analysis.pruning import examples_at_end, examples_trained, finished  # noqa: E402
from search.analysis.scaling import FIT_WITHIN, ScalingFit, fitted_sizes  # noqa: E402
from search.analysis.speeds import DeviceSpeeds, trial_points  # noqa: E402
from search.analysis.tuning import TuningCurve  # noqa: E402
from search.measure.profile import SpeedProfile  # noqa: E402
from search.record import Hyperparams, ProbeResult, TrialRecord  # noqa: E402

FIGURE_DPI = 110
_GREY = "#b0b0b0"


def _log2_axis(axis: plt.Axes, sizes: list[int]) -> None:
    axis.set_xscale("log", base=2)
    axis.set_xlim(min(sizes) / 1.4, max(sizes) * 1.4)  # room for the markers at both ends
    axis.set_xticks(sizes, [f"{b:,}" for b in sizes])
    axis.xaxis.set_minor_locator(ticker.NullLocator())  # x only: minorticks_off() would also unlabel a log y axis
    axis.set_xlabel("batch size")
    axis.grid(alpha=0.3)


def _mark_unmeasured(axis: plt.Axes, results: list[BatchSizeResult]) -> None:
    """A red "0/n" (completed/sampled) where a batch size has no point, so a gap is not read as a trend."""
    for r in results:
        if r.best is None:
            axis.text(r.batch_size, 0.03, f"0/{r.sampled}", transform=axis.get_xaxis_transform(), ha="center", va="bottom", fontsize=8, color="C3")


def _plot_measured(axis: plt.Axes, results: list[BatchSizeResult], values: list[float | None], color: str, label: str | None = None) -> None:
    """Markers per batch size, and lines only between neighbours in the search space that were both measured:
    a line across an unmeasured batch size would draw a trend nobody measured."""
    points = [(r.batch_size, v) for r, v in zip(results, values) if v is not None]
    axis.plot([x for x, _ in points], [y for _, y in points], "o", color=color, zorder=3, label=label)
    for (left, a), (right, b) in zip(zip(results, values), list(zip(results, values))[1:]):
        if a is not None and b is not None:
            axis.plot([left.batch_size, right.batch_size], [a, b], "-", color=color, zorder=3)


def _per_batch_size(
    axis: plt.Axes, results: list[BatchSizeResult], done: list[FrozenTrial], trial_values: list[float], best_values: list[float | None],
    color: str, ylabel: str, title: str, label: str | None = None,
) -> None:
    """Every completed trial in grey, the best per batch size in colour, and the gaps marked."""
    axis.scatter([Hyperparams.of(t).batch_size for t in done], trial_values, s=14, color=_GREY, zorder=2, label=label and "every completed trial")
    _plot_measured(axis, results, best_values, color, label)
    _mark_unmeasured(axis, results)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def _not_measured(axis: plt.Axes, why: str) -> None:
    axis.text(0.5, 0.5, why, transform=axis.transAxes, ha="center", fontsize=9)
    axis.set_yticks([])


def _label_log_axis(axis: plt.Axes) -> None:
    """Tick labels on a log axis even when its values span less than a decade (matplotlib then labels no major tick)."""
    axis.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    axis.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda value, _: f"{value:.3g}" if value > 0 else ""))


def _save(figure: plt.Figure, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(figure)
    return path.name


def _mark_noise_scale(axis: plt.Axes, probe: ProbeResult | None) -> None:
    """The noise-scale probe's B_simple (a proxy for the critical batch size) with its suggested range."""
    critical = probe.b_simple if probe else None
    span = probe.suggested_range if probe else None
    if critical is not None and span is not None:
        low, high = span
        axis.axvspan(low, high, color="C3", alpha=0.07, label=f"B_simple/8 to 2 B_simple: {low:,.0f}–{high:,.0f}")
        axis.axvline(critical, color="C3", ls="-.", lw=1.2, label=f"probe: B_simple = {critical:,.0f} (a proxy for B_crit)")


def figure_best_per_batch_size(results: list[BatchSizeResult], done: list[FrozenTrial], path: Path, probe: ProbeResult | None = None) -> str:
    """The best loss per batch size, and the best accuracy beside it when the study's loss classifies (no empty panel)."""
    sizes = [r.batch_size for r in results]
    measured = [r for r in results if r.best is not None]
    classifies = any(r.best_val_acc is not None for r in results)
    figure, axes = plt.subplots(1, 2 if classifies else 1, figsize=(11 if classifies else 6, 4.2), squeeze=False)
    loss_axis = axes[0][0]
    _per_batch_size(
        loss_axis, results, done, [t.value for t in done], [r.best_loss for r in results], "C0", "final validation loss",
        "Best validation loss per batch size\n(labels: completed / sampled trials; red: none completed)", label="best per batch size",
    )
    for r in measured:
        loss_axis.annotate(f"{r.completed}/{r.sampled}", (r.batch_size, r.best_loss), textcoords="offset points", xytext=(6, 6), fontsize=8)
    _mark_noise_scale(loss_axis, probe)
    loss_axis.legend(fontsize=7)
    if classifies:
        accuracies = [_or_nan(TrialRecord.of(t).final_val_acc) for t in done]
        _per_batch_size(
            axes[0][1], results, done, accuracies, [r.best_val_acc for r in results], "C1",
            "final validation accuracy", "Best validation accuracy per batch size",
        )
    for axis in axes[0]:
        _log2_axis(axis, sizes)
    return _save(figure, path)


def figure_lr_and_momentum(results: list[BatchSizeResult], done: list[FrozenTrial], fits: tuple[ScalingFit | None, ScalingFit | None], path: Path) -> str:
    sizes = [r.batch_size for r in results]
    measured = [r for r in results if r.best is not None]
    figure, (lr_axis, momentum_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    lr_axis.scatter(
        [Hyperparams.of(t).batch_size for t in done], [_or_nan(TrialRecord.of(t).effective_lr) for t in done], s=14, color=_GREY,
        label="every completed trial", zorder=2,
    )
    fitted = fitted_sizes(results)
    left_out = [r for r in measured if r not in fitted]
    lr_axis.plot([r.batch_size for r in fitted], [r.best_effective_lr for r in fitted], "o", color="C0", ms=7, label="best per batch size", zorder=3)
    adjusted = [r.best_effective_lr / (1 - r.best_momentum) for r in fitted]  # type: ignore[operator]
    lr_axis.plot([r.batch_size for r in fitted], adjusted, "s", mfc="none", color="C3", label="best: lr / (1 - momentum)", zorder=3)
    if left_out:
        lr_axis.plot(
            [r.batch_size for r in left_out], [r.best_effective_lr for r in left_out], "o", mfc="none", color="C7", ms=7,
            label=f"best, left out of the fit (loss > {FIT_WITHIN:.0%} worse)", zorder=3,
        )
    # Lines only over the fitted batch sizes: no extrapolation.
    xs = [min(r.batch_size for r in fitted), max(r.batch_size for r in fitted)] if fitted else []
    for fit, color, what in ((fits[0], "C0", "lr"), (fits[1], "C3", "lr/(1-m)")):
        if fit is None:
            continue
        interval = with_interval(fit)
        spread = f" (95%: {interval.low:.2f} to {interval.high:.2f})" if interval and interval.low is not None else " (2 points)"
        lr_axis.plot(xs, [fit.lr_at(x) for x in xs], "-", color=color, lw=1.2, label=f"{what} ∝ B^{fit.exponent:.2f}{spread}")
    if fits[0] is not None:
        # Dotted guides through the fit's middle: what linear (1) and square-root (0.5) scaling would look like.
        middle = math.sqrt(xs[0] * xs[1])
        for exponent, style in ((1.0, ":"), (0.5, "-.")):
            lr_axis.plot(xs, [fits[0].lr_at(middle) * (x / middle) ** exponent for x in xs], style, color="k", lw=0.8, alpha=0.5, label=f"exponent {exponent:g} (guide)")
    lr_axis.set_yscale("log")
    lr_axis.set_ylabel("learning rate given to the optimizer")
    lr_axis.set_title("Best learning rate per batch size (log-log)", fontsize=10)
    # Below the axes: on log-log axes any corner may hold points.
    lr_axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    _per_batch_size(
        momentum_axis, results, done, [Hyperparams.of(t).momentum for t in done], [r.best_momentum for r in results], "C4",
        "momentum", "Momentum of the best trial per batch size",
    )
    momentum_axis.set_ylim(0, 1)  # the whole range: never zoomed onto a few draws
    for axis in (lr_axis, momentum_axis):
        _log2_axis(axis, sizes)
    return _save(figure, path)


def _curve(trial: FrozenTrial) -> tuple[list[int], list[float]]:
    # Every validation in examples seen, the final one included (also under a time budget).
    points = trial_points(trial)
    return [p.examples for p in points], [p.val_loss for p in points]


def figure_curves(results: list[BatchSizeResult], budget: int, path: Path) -> str:
    measured = [r for r in results if r.best is not None]
    colors = plt.get_cmap("viridis")
    figure, axis = plt.subplots(figsize=(8, 4.6))
    curves = [(r, *_curve(r.best)) for r in measured]  # type: ignore[arg-type]
    for index, (r, xs, ys) in enumerate(curves):
        color = colors(index / max(1, len(measured) - 1))
        axis.plot(xs, ys, "o-", ms=3, color=color, label=f"B={r.batch_size:,} (trial {r.best.number})")  # type: ignore[union-attr]
    # A curve that blew up would squash the others flat: cut the axis at 1.5x the typical first
    # validation loss, and say so.
    firsts = [ys[0] for _, _, ys in curves if ys and math.isfinite(ys[0])]
    values = [y for _, _, ys in curves for y in ys if math.isfinite(y)]
    if firsts and values:
        top = 1.5 * statistics.median(firsts)
        if max(values) > top:
            axis.set_ylim(min(values) * 0.95, top)
            off = ", ".join(f"B={r.batch_size:,} (up to {max(ys):.3g})" for r, _, ys in curves if ys and max(ys) > top)
            axis.text(0.01, 0.99, f"cut off above {top:.3g}: {off}", transform=axis.transAxes, va="top", fontsize=8, color="C3")
    axis.set_xlim(0, budget * 1.02)
    axis.set_xlabel("training examples seen")
    axis.set_ylabel("validation loss")
    axis.set_title("Validation loss of the best trial of each batch size, at equal examples seen", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2, loc="upper right")
    return _save(figure, path)


def figure_tuning(curves: list[TuningCurve], path: Path) -> str:
    """Each batch size's expected best-of-k loss with its bootstrap band: how far its search had got."""
    colors = plt.get_cmap("viridis")
    figure, axis = plt.subplots(figsize=(8, 4.6))
    for index, curve in enumerate(curves):
        color = colors(index / max(1, len(curves) - 1))
        ks = list(range(1, curve.draws + 1))
        state = {True: "converged", False: "under-tuned", None: "not judged"}[curve.converged]
        axis.plot(ks, curve.expected_best, "o-", ms=3, color=color, label=f"B={curve.batch_size:,} ({state})")
        axis.fill_between(ks, [b[0] for b in curve.band], [b[1] for b in curve.band], color=color, alpha=0.12)
    axis.set_xlabel("search draws k")
    axis.set_ylabel("expected best validation loss over k draws")
    axis.set_title("Tuning adequacy per batch size (Dodge et al. 2019; band: bootstrap 90%)", fontsize=10)
    axis.grid(alpha=0.3)
    if curves:
        axis.legend(fontsize=8, ncol=2, loc="upper right")
    return _save(figure, path)


def figure_pruning(trials: list[FrozenTrial], budget: int, path: Path) -> str:
    ended = sorted(finished(trials), key=lambda t: t.number)
    seen = [examples_trained(t) for t in ended]
    figure, (bar_axis, total_axis) = plt.subplots(1, 2, figsize=(11, 4))
    bar_axis.bar(
        [t.number for t in ended], seen, color=["C0" if t.state == TrialState.COMPLETE else "C1" for t in ended], width=0.8
    )
    bar_axis.axhline(budget, color="k", lw=0.8, ls="--")
    bar_axis.legend(
        handles=[Patch(color="C0", label="completed"), Patch(color="C1", label="pruned"), Line2D([], [], color="k", lw=0.8, ls="--", label="budget")],
        fontsize=8, loc="upper right", framealpha=0.9,
    )
    bar_axis.set_xlabel("trial")
    bar_axis.set_ylabel("examples trained")
    bar_axis.set_title("Examples each trial trained before it ended", fontsize=10)
    numbers = [t.number for t in ended]
    at_end = itertools.accumulate(examples_at_end(t, budget) for t in ended)
    total_axis.plot(numbers, list(at_end), "--", color="k", label="every trial run to the end")
    total_axis.plot(numbers, list(itertools.accumulate(seen)), "-", color="C1", label="with pruning")
    total_axis.set_xlabel("trial")
    total_axis.set_ylabel("examples trained, cumulative")
    total_axis.set_title("Compute spent: examples trained by all trials so far", fontsize=10)
    total_axis.legend(fontsize=8)
    for axis in (bar_axis, total_axis):
        axis.grid(alpha=0.3)
    return _save(figure, path)


def figure_two_speeds(speeds: DeviceSpeeds, path: Path) -> str:
    """Best loss so far per batch size against examples (left) and training seconds (right), the target marked."""
    colors = plt.get_cmap("viridis")
    sizes = sorted(speeds.by_examples)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    for axis, curves, unit in ((axes[0], speeds.by_examples, "training examples seen"), (axes[1], speeds.by_seconds, "training seconds (estimated)")):
        for index, size in enumerate(sizes):
            xs, ys = zip(*curves[size])
            color = colors(index / max(1, len(sizes) - 1))
            axis.plot(xs, ys, "o-", drawstyle="steps-post", ms=3, color=color, label=f"B={size:,} ({speeds.trials[size]} trials)")
        axis.axhline(speeds.target_loss, color="C3", ls="--", lw=1, label=f"target {speeds.target_loss:.4f}")
        axis.set_xlabel(unit)
        axis.grid(alpha=0.3)
    for index, size in enumerate(sizes):
        reached = speeds.seconds_to_target[size]
        if reached is not None:
            axes[1].plot([reached], [speeds.target_loss], "v", ms=9, color=colors(index / max(1, len(sizes) - 1)), zorder=4)
    firsts = [curve[0][1] for curve in speeds.by_examples.values()]
    lows = [curve[-1][1] for curve in speeds.by_examples.values()]
    axes[0].set_ylim(min(lows + [speeds.target_loss]) * 0.97, max(1.3 * statistics.median(firsts), speeds.target_loss * 1.1))
    axes[0].set_ylabel("best validation loss so far")
    axes[0].set_title("At equal examples seen", fontsize=10)
    axes[1].set_title(f"At equal wall-clock training time on {speeds.device}\n(triangles: first reaching the target)", fontsize=10)
    axes[1].legend(fontsize=8, ncol=2, loc="upper right")
    return _save(figure, path)


def figure_profile(profiles: list[SpeedProfile], trials: list[FrozenTrial], path: Path) -> str:
    """Examples/s per batch size from each device's profile, and what the trials on that device measured."""
    figure, axis = plt.subplots(figsize=(8, 4.2))
    sizes: set[int] = set()
    for index, profile in enumerate(profiles):
        color = f"C{index}"
        xs = [s.batch_size for s in profile.sizes]
        rates = [s.examples_per_second for s in profile.sizes]
        errors = [[r - s.slowest for r, s in zip(rates, profile.sizes)], [s.fastest - r for r, s in zip(rates, profile.sizes)]]
        axis.errorbar(xs, rates, yerr=errors, fmt="o-", color=color, capsize=3, label=f"profile: {profile.device} (median, slowest-fastest)")
        ran = [(Hyperparams.of(t).batch_size, r.examples_per_second) for t in trials if (r := TrialRecord.of(t)).device == profile.device and r.examples_per_second]
        axis.scatter(
            [b for b, _ in ran], [rate for _, rate in ran], marker="x", color=color,
            alpha=0.6, label=f"trials on {profile.device} (whole training run)",
        )
        sizes.update(xs)
        sizes.update(b for b, _ in ran)
    axis.set_ylim(bottom=0)
    axis.set_ylabel("training examples per second")
    axis.set_title("Throughput of a full training step per batch size", fontsize=10)
    axis.legend(fontsize=8)
    _log2_axis(axis, sorted(sizes))
    return _save(figure, path)



def figure_sharpness_and_gap(trials: list[FrozenTrial], results: list[BatchSizeResult], path: Path) -> str:
    """The comparable diagnostics against batch size (a frontier's seed re-runs, else the good trials), medians joined."""
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    panels = (  # in the order of DIAGNOSTICS
        ("peak lr × λ_max / stability threshold", "Learning-rate-relative sharpness (1: edge of stability)", "C3"),
        ("L2 norm of the weights", "Weight norm at the final weights", "C2"),
        ("validation loss − training-subset loss", "Generalization gap at the final weights", "C4"),
    )
    compared = compared_trials(trials)
    measured = [diagnosed(compared, value) for value, _ in DIAGNOSTICS]
    for axis, points, (ylabel, title, color) in zip(axes, measured, panels):
        axis.scatter([b for b, _ in points], [v for _, v in points], s=16, color=_GREY, zorder=2, label="every compared trial")
        medians = median_by_size(points)
        _plot_measured(axis, results, [medians.get(r.batch_size) for r in results], color, "median per batch size")
        if not points:
            _not_measured(axis, "not measured\n(diagnostics off, SGD only,\nor no completed trial)")
        axis.set_ylabel(ylabel)
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=8)
        _log2_axis(axis, [r.batch_size for r in results])
    if measured[0]:
        axes[0].axhline(1.0, color="C3", ls=":", lw=1)
        axes[0].set_yscale("log")
    return _save(figure, path)


def _mark_critical(axis: plt.Axes, critical: CriticalBatch) -> None:
    predicted = [(b, loss) for b, loss in sorted(critical.predicted.items()) if loss is not None]
    if predicted:
        axis.plot([b for b, _ in predicted], [v for _, v in predicted], "--", marker="x", color="C3", lw=1.2,
                  label=f"predicted from B_simple (probe) and the efficiency curve of B={critical.smallest_batch}")
    if critical.b_crit_empirical is not None and critical.b_crit_ci95 is not None:
        low, high = critical.b_crit_ci95
        axis.axvspan(low, high if high is not None else 1e12, color="C2", alpha=0.08)  # the axis limits clip it
        rejected = critical.lack_of_fit_p is not None and critical.lack_of_fit_p < 0.05
        label = f"measured B_crit ≈ {critical.b_crit_empirical:,.0f} (95% interval shaded)" + (
            f"; one B_crit rejected (lack of fit p = {critical.lack_of_fit_p:.1g})" if rejected else ""
        )
        axis.axvline(critical.b_crit_empirical, color="C2", lw=1.2, ls=":" if rejected else "-", label=label)
    if critical.b_simple is not None:
        axis.axvline(critical.b_simple, color="C3", ls="-.", lw=1, label=f"B_simple = {critical.b_simple:,.0f}")


def figure_frontier(rows: list[FrontierRow], sizes: list[int], fit: ExponentFit | None, path: Path, critical: CriticalBatch | None = None) -> str:
    """The frontier: mean validation loss over paired seeds with its 95% interval, and the configuration each batch size uses;
    with the critical batch size measured, the frontier B_simple predicts and B_crit with its interval.

    Points only where a batch size was measured, lines only between listed neighbours that both were."""
    figure, (loss_axis, lr_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    measured = {r.batch_size: r for r in rows}
    loss_axis.errorbar(
        [r.batch_size for r in rows], [r.val_loss_mean for r in rows], yerr=[r.val_loss_ci95 or 0.0 for r in rows],
        fmt="o", color="C0", capsize=4, zorder=3, label="mean over seeds, 95% interval",
    )
    for left, right in zip(sizes, sizes[1:]):
        if left in measured and right in measured:
            loss_axis.plot([left, right], [measured[left].val_loss_mean, measured[right].val_loss_mean], "-", color="C0", lw=1, zorder=2)
    for size in sizes:
        if size not in measured:
            loss_axis.text(size, 0.03, "not measured", transform=loss_axis.get_xaxis_transform(), ha="center", fontsize=7, color="C3", rotation=90)
    if critical is not None:
        _mark_critical(loss_axis, critical)
    loss_axis.set_ylabel("final validation loss")
    loss_axis.set_title("The frontier: each batch size tuned, its best re-run with paired seeds", fontsize=10)
    loss_axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))  # below: inside, it hid points
    lr_axis.plot([r.batch_size for r in rows], [r.effective_lr for r in rows], "o", color="C1", label="effective learning rate")
    if fit is not None and rows:
        xs = [min(sizes), max(sizes)]
        intercept = sum(math.log(r.effective_lr) - fit.exponent * math.log(r.batch_size) for r in rows) / len(rows)
        interval = f" (95% interval {fit.low:.2f} to {fit.high:.2f})" if fit.low is not None else " (two points: no interval)"
        lr_axis.plot(xs, [math.exp(intercept + fit.exponent * math.log(x)) for x in xs], "--", color="C1", lw=1,
                     label=f"fit: B^{fit.exponent:.2f}{interval}")
    lr_axis.set_yscale("log")
    _label_log_axis(lr_axis)
    lr_axis.set_ylabel("effective learning rate")
    momentum_axis = lr_axis.twinx()
    momentum_axis.plot([r.batch_size for r in rows], [r.momentum for r in rows], "s", color="C2", ms=5, label="momentum")
    momentum_axis.set_ylim(0, 1)
    momentum_axis.set_ylabel("momentum")
    lr_axis.set_title("The configuration each batch size uses", fontsize=10)
    handles = lr_axis.get_legend_handles_labels()
    extra = momentum_axis.get_legend_handles_labels()
    # Below the axes: the points may sit in any corner.
    lr_axis.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    for axis in (loss_axis, lr_axis):
        _log2_axis(axis, sizes)
    return _save(figure, path)
