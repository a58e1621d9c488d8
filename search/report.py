"""`python -m search.report --study NAME`: an HTML page that answers "what difference does batch size make?"

It renders what `search.analysis` computes from the study's own trials (and the test-set runs
of `search.evaluate`, when there are any): four PNG figures, their numbers as tables, and a
plain-language summary. The page is static (no scripts, no network), so it opens anywhere.
"""
from __future__ import annotations

import itertools

import argparse
import html
import math
import re
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from search import analysis, speed  # noqa: E402
from search.analysis import BatchSizeResult, DeviceSpeeds, EvaluationResult, ScalingFit  # noqa: E402
from search.errors import exits_on_user_error  # noqa: E402
from search.storage import STORAGE_ENV, redact  # noqa: E402
from search.trials import EVALUATION_SUFFIX, TrialRow, completed, connect, find, load, locate, state_counts  # noqa: E402

FIGURE_DPI = 110
_GREY = "#b0b0b0"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m search.report", description=__doc__.split("\n")[0])
    parser.add_argument("--study", required=True, help="a study name from studies/, a study file, or a study name in the storage")
    parser.add_argument("--storage", help=f"database URL (default: ${STORAGE_ENV}, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--out", type=Path, help="output folder (default: results/<study>-report)")
    parser.add_argument(
        "--target-loss", type=float,
        help=f"loss for the time-to-target comparison (default: the best loss + {analysis.TARGET_MARGIN:.0%})",
    )
    return parser.parse_args(argv)


# -- figures --------------------------------------------------------------------------------

def _log2_axis(axis: plt.Axes, sizes: list[int]) -> None:
    axis.set_xscale("log", base=2)
    axis.set_xlim(min(sizes) / 1.4, max(sizes) * 1.4)  # room for the markers at both ends
    axis.set_xticks(sizes, [f"{b:,}" for b in sizes])
    axis.minorticks_off()
    axis.set_xlabel("batch size")
    axis.grid(alpha=0.3)


def _mark_unmeasured(axis: plt.Axes, results: list[BatchSizeResult]) -> None:
    """A red "0/n" (completed/sampled) where a batch size has no point, so a gap is not read as a trend."""
    for r in results:
        if r.best is None:
            axis.text(r.batch_size, 0.03, f"0/{r.sampled}", transform=axis.get_xaxis_transform(), ha="center", va="bottom", fontsize=8, color="C3")


def _plot_measured(axis: plt.Axes, results: list[BatchSizeResult], values: list[float | None], color: str, label: str | None = None) -> None:
    """Markers per batch size, solid lines between neighbours in the search space, dotted across gaps."""
    points = [(r.batch_size, v) for r, v in zip(results, values) if v is not None]
    axis.plot([x for x, _ in points], [y for _, y in points], ":", color=color, lw=1, alpha=0.6, zorder=2)
    axis.plot([x for x, _ in points], [y for _, y in points], "o", color=color, zorder=3, label=label)
    for (left, a), (right, b) in zip(zip(results, values), list(zip(results, values))[1:]):
        if a is not None and b is not None:
            axis.plot([left.batch_size, right.batch_size], [a, b], "-", color=color, zorder=3)


def _per_batch_size(
    axis: plt.Axes, results: list[BatchSizeResult], done: list[FrozenTrial], trial_values: list[float], best_values: list[float | None],
    color: str, ylabel: str, title: str, label: str | None = None,
) -> None:
    """Every completed trial in grey, the best per batch size in colour, and the gaps marked."""
    axis.scatter([t.params["batch_size"] for t in done], trial_values, s=14, color=_GREY, zorder=2, label=label and "every completed trial")
    _plot_measured(axis, results, best_values, color, label)
    _mark_unmeasured(axis, results)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)


def _save(figure: plt.Figure, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(figure)
    return path.name


def _mark_knee_and_prediction(axis: plt.Axes, results: list[BatchSizeResult], probe: dict[str, Any] | None) -> None:
    """The empirical knee, and the noise-scale probe's predicted critical batch size with its suggested range."""
    measured = [r.best_loss for r in results if r.best_loss is not None]
    knee = analysis.empirical_knee(results)
    if knee is not None:
        axis.axhline(min(measured) * (1 + analysis.KNEE_WITHIN), color="C2", ls=":", lw=1, label=f"within {analysis.KNEE_WITHIN:.0%} of the best")
        axis.axvline(knee, color="C2", lw=1.2, label=f"empirical knee: B={knee:,} (largest within {analysis.KNEE_WITHIN:.0%})")
    critical = probe.get("critical_batch_size") if probe else None
    if isinstance(critical, (int, float)):
        low, high = probe["suggested_range"]  # type: ignore[index]
        axis.axvspan(low, high, color="C3", alpha=0.07, label=f"probe's range B_crit/8 to 2 B_crit: {low:,.0f}–{high:,.0f}")
        axis.axvline(critical, color="C3", ls="-.", lw=1.2, label=f"probe: B_crit ≈ B_simple = {critical:,.0f}")


def figure_best_per_batch_size(results: list[BatchSizeResult], done: list[FrozenTrial], path: Path, probe: dict[str, Any] | None = None) -> str:
    sizes = [r.batch_size for r in results]
    measured = [r for r in results if r.best is not None]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    _per_batch_size(
        loss_axis, results, done, [t.value for t in done], [r.best_loss for r in results], "C0", "final validation loss",
        "Best validation loss per batch size\n(labels: completed / sampled trials; red: none completed)", label="best per batch size",
    )
    floor = min(r.best_loss for r in measured)  # type: ignore[type-var]
    loss_axis.axhline(floor * (1 + analysis.NEAR_BEST), color="C2", ls="--", lw=1, label=f"within {analysis.NEAR_BEST:.0%} of the best")
    for r in measured:
        loss_axis.annotate(f"{r.completed}/{r.sampled}", (r.batch_size, r.best_loss), textcoords="offset points", xytext=(6, 6), fontsize=8)
    _mark_knee_and_prediction(loss_axis, results, probe)
    loss_axis.legend(fontsize=7)
    _per_batch_size(
        acc_axis, results, done, [t.user_attrs.get("final_val_acc", math.nan) for t in done], [r.best_val_acc for r in results], "C1",
        "final validation accuracy", "Best validation accuracy per batch size",
    )
    for axis in (loss_axis, acc_axis):
        _log2_axis(axis, sizes)
    return _save(figure, path)


def figure_lr_and_momentum(results: list[BatchSizeResult], done: list[FrozenTrial], fits: tuple[ScalingFit | None, ScalingFit | None], path: Path) -> str:
    sizes = [r.batch_size for r in results]
    measured = [r for r in results if r.best is not None]
    figure, (lr_axis, momentum_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    lr_axis.scatter(
        [t.params["batch_size"] for t in done], [t.user_attrs.get("effective_lr", math.nan) for t in done], s=14, color=_GREY,
        label="every completed trial", zorder=2,
    )
    fitted = analysis.fitted_sizes(results)
    left_out = [r for r in measured if r not in fitted]
    lr_axis.plot([r.batch_size for r in fitted], [r.best_effective_lr for r in fitted], "o", color="C0", ms=7, label="best per batch size", zorder=3)
    adjusted = [r.best_effective_lr / (1 - r.best_momentum) for r in fitted]  # type: ignore[operator]
    lr_axis.plot([r.batch_size for r in fitted], adjusted, "s", mfc="none", color="C3", label="best: lr / (1 - momentum)", zorder=3)
    if left_out:
        lr_axis.plot(
            [r.batch_size for r in left_out], [r.best_effective_lr for r in left_out], "o", mfc="none", color="C7", ms=7,
            label=f"best, left out of the fit (loss > {analysis.FIT_WITHIN:.0%} worse)", zorder=3,
        )
    # Lines only over the fitted batch sizes: no extrapolation.
    xs = [min(r.batch_size for r in fitted), max(r.batch_size for r in fitted)] if fitted else []
    for fit, color, what in ((fits[0], "C0", "lr"), (fits[1], "C3", "lr/(1-m)")):
        if fit is None:
            continue
        spread = f" ± {fit.stderr:.2f}" if fit.stderr is not None else " (2 points)"
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
        momentum_axis, results, done, [t.params.get("momentum", math.nan) for t in done], [r.best_momentum for r in results], "C4",
        "momentum", "Momentum of the best trial per batch size",
    )
    for axis in (lr_axis, momentum_axis):
        _log2_axis(axis, sizes)
    return _save(figure, path)


def _curve(trial: FrozenTrial) -> tuple[list[int], list[float]]:
    # Every validation in examples seen, the final one included (also under a time budget).
    points = analysis.trial_points(trial)
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


def figure_pruning(trials: list[FrozenTrial], budget: int, path: Path) -> str:
    finished = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)), key=lambda t: t.number)
    seen = [int(t.user_attrs.get("examples_seen", 0)) for t in finished]
    figure, (bar_axis, total_axis) = plt.subplots(1, 2, figsize=(11, 4))
    bar_axis.bar(
        [t.number for t in finished], seen, color=["C0" if t.state == TrialState.COMPLETE else "C1" for t in finished], width=0.8
    )
    bar_axis.axhline(budget, color="k", lw=0.8, ls="--")
    bar_axis.legend(
        handles=[Patch(color="C0", label="completed"), Patch(color="C1", label="pruned"), Line2D([], [], color="k", lw=0.8, ls="--", label="budget")],
        fontsize=8, loc="upper right", framealpha=0.9,
    )
    bar_axis.set_xlabel("trial")
    bar_axis.set_ylabel("examples trained")
    bar_axis.set_title("Examples each trial trained before it ended", fontsize=10)
    running, cumulative = 0, []
    for value in seen:
        running += value
        cumulative.append(running)
    numbers = [t.number for t in finished]
    at_end = itertools.accumulate(analysis.examples_at_end(t, budget) for t in finished)
    total_axis.plot(numbers, list(at_end), "--", color="k", label="every trial run to the end")
    total_axis.plot(numbers, cumulative, "-", color="C1", label="with pruning")
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


def figure_profile(profiles: list[speed.SpeedProfile], trials: list[FrozenTrial], path: Path) -> str:
    """Examples/s per batch size from each device's profile, and what the trials on that device measured."""
    figure, axis = plt.subplots(figsize=(8, 4.2))
    sizes: set[int] = set()
    for index, profile in enumerate(profiles):
        color = f"C{index}"
        xs = [s.batch_size for s in profile.sizes]
        rates = [s.examples_per_second for s in profile.sizes]
        errors = [[r - s.slowest for r, s in zip(rates, profile.sizes)], [s.fastest - r for r, s in zip(rates, profile.sizes)]]
        axis.errorbar(xs, rates, yerr=errors, fmt="o-", color=color, capsize=3, label=f"profile: {profile.device} (median, slowest-fastest)")
        ran = [t for t in trials if t.user_attrs.get("device") == profile.device and t.user_attrs.get("examples_per_second")]
        axis.scatter(
            [t.params["batch_size"] for t in ran], [t.user_attrs["examples_per_second"] for t in ran], marker="x", color=color,
            alpha=0.6, label=f"trials on {profile.device} (whole training run)",
        )
        sizes.update(xs)
        sizes.update(t.params["batch_size"] for t in ran)
    axis.set_ylim(bottom=0)
    axis.set_ylabel("training examples per second")
    axis.set_title("Throughput of a full training step per batch size", fontsize=10)
    axis.legend(fontsize=8)
    _log2_axis(axis, sorted(sizes))
    return _save(figure, path)


def _two_speeds_section(speeds: list[DeviceSpeeds], profiles: list[speed.SpeedProfile], trials: list[FrozenTrial], out: Path) -> str:
    parts = [
        "<p>Users pay in seconds, not examples. Left: for each batch size, the best validation loss any of its trials had "
        "reached by a number of examples; right: the same against training seconds on the device. Seconds are estimated "
        "per trial as examples seen divided by that trial's measured training examples/s (validation time excluded, a "
        "constant rate assumed); the time to the target is read at validation checkpoints, so it is an upper bound.</p>"
    ]
    for index, device in enumerate(speeds):
        parts.append(f"<p><b>{html.escape(analysis.two_speeds_sentence(device))}</b></p>")
        parts.append(f'<img src="{figure_two_speeds(device, out / f"two_speeds_{index}.png")}" alt="best loss against examples and seconds on {html.escape(device.device)}">')
        rows = [
            [
                f"{b:,}", str(device.trials[b]), _number(device.seconds_to_target[b], ".1f") if device.seconds_to_target[b] is not None else "not reached",
                _number(device.loss_at_common_examples.get(b), ".4f"),
            ]
            for b in sorted(device.trials)
        ]
        parts.append(_table(
            ["batch size", "trials", f"seconds to loss {device.target_loss:.4f}", f"best loss by {device.common_examples:,.0f} examples"], rows,
        ))
    if not speeds:
        parts.append("<p>No trial has finished with a measured speed yet.</p>")
    if profiles:
        parts.append(f'<img src="{figure_profile(profiles, trials, out / "throughput.png")}" alt="throughput profile per batch size">')
        rows = [
            [profile.device, f"{s.batch_size:,}", f"{s.examples_per_second:,.0f}", f"{s.slowest:,.0f} – {s.fastest:,.0f}", f"{s.spread:.0%}",
             f"{1000 * s.batch_size / s.examples_per_second:.1f}", f"{s.peak_memory_bytes / 2**20:,.1f}"]
            for profile in profiles for s in profile.sizes
        ]
        parts.append(_table(["device", "batch size", "examples/s (median)", "slowest – fastest", "spread", "step ms", "peak memory MB"], rows))
        parts.append("".join(
            f"<p class=\"meta\">{html.escape(p.device)}: measured {html.escape(p.measured_at)} in {p.seconds:.1f} s; largest size: "
            f"{html.escape(p.stopped)}; peak memory: {html.escape(p.memory_method)}.</p>"
            for p in profiles
        ))
    else:
        parts.append("<p>No speed profile is stored on this study: run <code>python -m search.speed --study NAME</code>.</p>")
    return "".join(parts)


def figure_sharpness_and_gap(trials: list[FrozenTrial], results: list[BatchSizeResult], path: Path) -> str:
    """Sharpness and generalization gap of every completed trial against batch size, medians joined."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        ("sharpness", "top Hessian eigenvalue (training loss)", "Sharpness at the final weights (Keskar et al.)", "C3"),
        ("generalization_gap", "validation loss − training-subset loss", "Generalization gap at the final weights", "C4"),
    )
    for axis, (key, ylabel, title, color) in zip(axes, panels):
        points = analysis.diagnosed(trials, key)
        axis.scatter([b for b, _ in points], [v for _, v in points], s=16, color=_GREY, zorder=2, label="every completed trial")
        medians = analysis.median_by_size(points)
        _plot_measured(axis, results, [medians.get(r.batch_size) for r in results], color, "median per batch size")
        if not points:
            axis.text(0.5, 0.5, "not measured (diagnostics off, or no completed trial)", transform=axis.transAxes, ha="center", fontsize=9)
        axis.set_ylabel(ylabel)
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=8)
        _log2_axis(axis, [r.batch_size for r in results])
    if analysis.diagnosed(trials, "sharpness"):
        axes[0].set_yscale("log")
    return _save(figure, path)


def _probe_section(probe: dict[str, Any] | None, study_name: str) -> str:
    if probe is None:
        return (
            f"<p>No noise-scale probe is stored on this study. Run <code>python -m search.probe --study {html.escape(study_name)}</code> "
            "to measure the gradient noise scale and draw the predicted critical batch size on the first figure.</p>"
        )
    rows = [
        [f"{p['examples_seen']:,}", _number(p["train_loss"], ".3f"), f"{p['gradient_sq']:.4g}", f"{p['trace']:.4g}",
         _number(p["b_simple"], ",.0f"), _number(p["stderr"], ",.0f")]
        for p in probe["points"]
    ]
    return (
        f"<p>Probe of {html.escape(str(probe['created']))}: batch size {probe['batch_size']:,}, effective learning rate "
        f"{probe['effective_lr']:.4g}, momentum {probe['momentum']:.3f}, augmentation on; gradient norms at {probe['small_batch']} and "
        f"{probe['big_batch']} examples averaged over {probe['measurements']} big batches per point "
        "(McCandlish et al. 2018, Appendix A); ± is a jackknife standard error over those batches.</p>"
        + _table(["examples seen", "train loss", "|G|² estimate", "tr(Σ) estimate", "B_simple", "± standard error"], rows)
    )


# -- the page -------------------------------------------------------------------------------

def _number(value: Any, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


def _table(headers: list[str], rows: Iterable[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _batch_size_table(results: list[BatchSizeResult]) -> str:
    rows = []
    for r in results:
        best = r.best
        rows.append([
            f"{r.batch_size:,}", str(r.sampled), str(r.completed), _number(r.best_loss, ".4f"), _number(r.best_val_acc, ".4f"),
            _number(best.params.get("lr") if best else None, ".4g"), _number(r.best_effective_lr, ".4g"),
            _number(r.best_momentum, ".3f"), str(best.number) if best else "–",
        ])
    return _table(
        ["batch size", "trials sampled", "completed", "best val loss", "best val acc", "lr (sampled)", "effective lr", "momentum", "best trial"],
        rows,
    )


def _schedule_section(rows: list[analysis.ScheduleRow]) -> str:
    """Best loss per starting batch size under each batch-size schedule; nothing when the study had one schedule."""
    if not rows:
        return ""
    schedules = list(rows[0].best_loss)
    table = _table(
        ["starting batch size", *(f"{s}: best val loss (completed/sampled)" for s in schedules)],
        ([f"{r.batch_size:,}", *(f"{_number(r.best_loss[s], '.4f')} ({r.completed[s]}/{r.sampled[s]})" for s in schedules)] for r in rows),
    )
    return (
        "<h2>Batch-size schedules: decay the learning rate or grow the batch</h2><p>decay_lr keeps the batch size and decays "
        "the learning rate; grow_batch keeps the learning rate after warm-up and multiplies the batch size by the same factors "
        "at the same points (Smith et al. 2017), from the sampled batch size. Both train the same example budget.</p>" + table
    )


def _evaluation_section(evaluation: list[EvaluationResult], study_name: str) -> str:
    if not evaluation:
        return (
            "<p>No configuration has been evaluated on the test set yet. Run "
            f"<code>python -m search.evaluate --study {html.escape(study_name)} --top 2 --seeds 2</code> "
            "to retrain the best configurations on the full training split and measure them on the test split.</p>"
        )
    rows = [
        [
            str(e.source_trial), f"{e.batch_size:,}", f"{e.lr:.4g}", f"{e.effective_lr:.4g}", f"{e.momentum:.3f}", _number(e.val_loss, ".4f"),
            str(e.seeds), analysis.mean_spread_text(e.test_acc), f"{min(e.test_acc):.4f} – {max(e.test_acc):.4f}", analysis.mean_spread_text(e.test_loss),
        ]
        for e in evaluation
    ]
    return (
        "<p>Each configuration retrained from scratch on the whole training split (training and validation images) "
        "with the same example budget, then measured once on the held-out test split. Mean ± sample standard deviation "
        "over seeds; with two or three seeds the spread is itself rough.</p>"
        + _table(
            ["search trial", "batch size", "lr", "effective lr", "momentum", "search val loss", "seeds", "test accuracy",
             "test accuracy range", "test loss"],
            rows,
        )
    )


def _top_trials_table(done: list[FrozenTrial], top: int = 10) -> str:
    rows = []
    for rank, trial in enumerate(done[:top], start=1):
        row = TrialRow.of(trial)
        rows.append([
            str(rank), str(row.number), f"{row.batch_size:,}", _number(row.lr, ".4g"), _number(row.effective_lr, ".4g"),
            _number(row.momentum, ".3f"), _number(row.steps, ","), _number(row.examples_seen, ","),
            _number(row.final_val_loss, ".4f"), _number(row.final_val_acc, ".4f"), _number(row.wall_seconds, ".1f") + " s",
        ])
    return _table(
        ["rank", "trial", "batch size", "lr", "effective lr", "momentum", "steps", "examples", "val loss", "val acc", "duration"], rows
    )


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.summary { background: #f4f7fb; border-left: 4px solid #3a6ea5; padding: 0.6em 1.2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; } th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #eee; } .meta { color: #555; font-size: 0.9em; } code { background: #f3f3f3; }
"""


def render_html(study: optuna.Study, url: str, trials: list[FrozenTrial], done: list[FrozenTrial], sections: dict[str, str]) -> str:
    spec = study.user_attrs.get("spec", {})
    dataset, model = spec.get("dataset", {}), spec.get("model", {})
    meta = (
        f"Storage {redact(url)}. {len(trials)} trials: {state_counts(trials)}. "
        f"Data: {dataset.get('name', '?')}{' (' + str(dataset.get('path')) + ')' if dataset.get('path') else ''}; "
        f"model: {model.get('name', '?')} {model.get('args', '')}; budget: "
        + (f"{spec['budget_seconds']:g} s of training per trial (steps from the speed profile); " if spec.get("budget_seconds") else
           f"{study.user_attrs.get('budget_examples', 0):,} training examples per trial, validation every {study.user_attrs.get('report_every_examples', 0):,}; ")
        + f"{study.user_attrs.get('lr_parameterization', '')}. Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Batch-size report: {html.escape(study.study_name)}</title>
<style>{_STYLE}</style></head><body>
<h1>What difference does batch size make? Study <code>{html.escape(study.study_name)}</code></h1>
<p class="meta">{html.escape(meta)}</p>
<div class="summary"><h2 style="border:0;margin-top:0.5em">Summary</h2>{sections['summary']}</div>
<h2>Best validation loss and accuracy per batch size</h2>
<p>Every trial saw the same number of training examples, so a larger batch took fewer optimizer steps. Only completed
trials count here: a pruned trial stopped early and was measured after fewer examples.</p>
<img src="{sections['best_png']}" alt="best validation loss and accuracy per batch size">
{sections['batch_table']}
{sections['schedules']}
<h2>Learning rate and momentum of the best trial per batch size</h2>
<p>An exponent of 1 means the best learning rate grows linearly with batch size, 0.5 with its square root, 0 not at all.
The best trial of a batch size is one draw from the sampler, so each point is noisy; grey dots show every completed trial.</p>
<img src="{sections['lr_png']}" alt="best learning rate (log-log) and momentum per batch size">
<h2>Why: gradient noise scale, sharpness and generalization gap</h2>
<p>The gradient noise scale B_simple = tr(Σ)/|G|² predicts the critical batch size: below it a larger batch saves steps
at little cost in examples, above it mostly wastes examples (McCandlish et al. 2018). The empirical knee is the largest
batch size whose best loss is within {analysis.KNEE_WITHIN:.0%} of the best; both are marked on the first figure. Large batches are said to
end in sharper minima that generalize worse (Keskar et al. 2016): sharpness is the largest Hessian eigenvalue of the training
loss over a fixed training subset, the gap the validation loss minus the loss on a fixed training subset, both at each
completed trial's final weights.</p>
{sections['probe']}
<img src="{sections['diagnostics_png']}" alt="sharpness and generalization gap against batch size">
<h2>Validation loss against examples seen</h2>
<img src="{sections['curves_png']}" alt="validation loss against examples seen for the best trial of each batch size">
<h2>The two speeds: loss per example and loss per second</h2>
{sections['two_speeds']}
<h2>Compute saved by pruning</h2>
<img src="{sections['pruning_png']}" alt="examples trained per trial and cumulative, with and without pruning">
<h2>Test-set evaluation</h2>
{sections['evaluation']}
<h2>Best trials</h2>
{sections['top_table']}
</body></html>
"""


def write_report(
    study: optuna.Study, evaluation_study: optuna.Study | None, url: str, out: Path, target_loss: float | None = None,
) -> tuple[Path, list[str]]:
    """Write report.html and its figures into `out`; returns the page and the summary sentences."""
    done = completed(study)
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    budget = int(study.user_attrs.get("budget_examples") or max(t.user_attrs.get("examples_seen", 0) for t in trials))
    if study.user_attrs.get("spec", {}).get("budget_seconds"):
        # A time budget: the longest trial planned (steps from the speed profile).
        budget = max((analysis.examples_at_end(t, budget) for t in trials if "budget_seconds" in t.user_attrs), default=budget)
    results = analysis.per_batch_size(trials)
    fits = analysis.lr_fits(results)
    savings = analysis.pruning_savings(trials, budget)
    runs = evaluation_study.get_trials(deepcopy=False) if evaluation_study else []
    evaluation = analysis.evaluation_results(trials, runs)
    summary = analysis.summary(trials, results, fits, savings, evaluation)
    probe = analysis.latest_probe(study.user_attrs)
    summary += analysis.diagnostics_summary(trials, results, probe)
    speeds = analysis.two_speeds(trials, target_loss)
    summary += [analysis.two_speeds_sentence(s) for s in speeds]
    schedules = analysis.schedule_comparison(trials)
    summary += [line for line in [analysis.schedule_sentence(schedules)] if line]
    sections = {
        "summary": "".join(f"<p>{html.escape(line)}</p>" for line in summary),
        "best_png": figure_best_per_batch_size(results, done, out / "best_per_batch_size.png", probe),
        "diagnostics_png": figure_sharpness_and_gap(trials, results, out / "sharpness_and_gap.png"),
        "probe": _probe_section(probe, study.study_name),
        "lr_png": figure_lr_and_momentum(results, done, fits, out / "lr_and_momentum.png"),
        "curves_png": figure_curves(results, budget, out / "loss_curves.png"),
        "pruning_png": figure_pruning(trials, budget, out / "pruning.png"),
        "batch_table": _batch_size_table(results),
        "schedules": _schedule_section(schedules),
        "evaluation": _evaluation_section(evaluation, study.study_name),
        "top_table": _top_trials_table(done),
        "two_speeds": _two_speeds_section(speeds, speed.all_stored(study), trials, out),
    }
    page = out / "report.html"
    page.write_text(render_html(study, url, trials, done, sections), encoding="utf-8")
    return page, summary


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study_name, url = locate(args.study, args.storage)
    storage = connect(url)
    study = load(storage, study_name, url)
    out = args.out or Path("results") / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', study_name)}-report"
    page, summary = write_report(study, find(storage, study_name + EVALUATION_SUFFIX), url, out, args.target_loss)
    print("\n".join(summary))
    print(f"report: {page.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
