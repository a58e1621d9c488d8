"""`python -m search.report`'s page: HTML sections and tables around the figures, and `write_report` that puts them together.

It renders what `search.analysis` computes from the study's own trials (and the test-set runs
of `search.evaluate`, when there are any): PNG figures (`search.render.figures`), their numbers
as tables, and a plain-language summary. The page is static (no scripts, no network), so it
opens anywhere. Nothing here imports torch or lightning.
"""
from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import optuna
from optuna.trial import FrozenTrial

from search.analysis.critical import CriticalBatch
from search.analysis.evaluation import (
    EvaluationResult,
    mean_spread_text,
)
from search.analysis.frontier import (
    FrontierRow,
)
from search.analysis.per_batch_size import BatchSizeResult
from search.analysis.schedules import (
    ScheduleRow,
)
from search.analysis.speeds import (
    DeviceSpeeds,
    two_speeds_sentence,
)
from search.analysis.study_report import StudyReport
from search.measure.profile import SpeedProfile
from search.record import (
    Hyperparams,
    ProbeResult,
    StudyRecord,
)
from search.render.figures import (
    figure_best_per_batch_size,
    figure_curves,
    figure_frontier,
    figure_lr_and_momentum,
    figure_profile,
    figure_pruning,
    figure_sharpness_and_gap,
    figure_tuning,
    figure_two_speeds,
)
from search.render.text import number_text
from search.store.trials import TrialRow, state_counts
from search.store.urls import redact


def _two_speeds_section(speeds: list[DeviceSpeeds], profiles: list[SpeedProfile], trials: list[FrozenTrial], out: Path) -> str:
    parts = [
        "<p>Users pay in seconds, not examples. Left: for each batch size, the best validation loss any of its trials had "
        "reached by a number of examples; right: the same against training seconds on the device. Seconds are estimated "
        "per trial as examples seen divided by that trial's measured training examples/s (validation time excluded, a "
        "constant rate assumed); the time to the target is read at validation checkpoints, so it is an upper bound.</p>"
    ]
    for index, device in enumerate(speeds):
        parts.append(f"<p><b>{html.escape(two_speeds_sentence(device))}</b></p>")
        parts.append(f'<img src="{figure_two_speeds(device, out / f"two_speeds_{index}.png")}" alt="best loss against examples and seconds on {html.escape(device.device)}">')
        rows = [
            [
                f"{b:,}", str(device.trials[b]), number_text(device.seconds_to_target[b], ".1f", "not reached"),
                number_text(device.loss_at_common_examples.get(b), ".4f"),
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



def _probe_section(probe: ProbeResult | None, study_name: str) -> str:
    if probe is None:
        return (
            f"<p>No noise-scale probe is stored on this study. Run <code>python -m search.probe --study {html.escape(study_name)}</code> "
            "to measure B_simple along a run (in a frontier study, of its tuned smallest batch size) and predict the frontier from it.</p>"
        )
    rows = [
        [f"{p.examples_seen:,}", number_text(p.b_simple_loss, ".3f"), f"{p.gradient_sq:.4g}", f"{p.trace:.4g}",
         number_text(p.b_simple, ",.0f"), number_text(p.stderr, ",.0f")]
        for p in probe.points
    ]
    return (
        f"<p>Probe of {html.escape(probe.created)}: batch size {probe.batch_size:,}, effective learning rate "
        f"{probe.effective_lr:.4g}, momentum {probe.momentum:.3f} "
        f"({html.escape(probe.hyperparams_from)}), augmentation on; "
        f"{html.escape(probe.normalization)}; gradient norms at "
        f"{probe.small_batch} and {probe.big_batch} examples averaged over {probe.measurements} big batches per point "
        "(McCandlish et al. 2018, Appendix A); ± is a jackknife standard error over those batches. B_simple is a proxy for "
        "the critical batch size, exact only when the Hessian is proportional to the identity.</p>"
        + _table(["examples seen", "training loss at the estimate", "|G|² estimate", "tr(Σ) estimate", "B_simple", "± standard error"], rows)
    )


def _critical_section(critical: CriticalBatch | None) -> str:
    """The data-efficiency curve and the inverted frontier points, as numbers; empty for a joint study."""
    if critical is None or not critical.curve:
        return ""
    curve = _table(["examples", "mean validation loss"], [[f"{c['examples']:,.0f}", f"{c['val_loss']:.4f}"] for c in critical.curve])
    points = _table(
        ["batch size", "seed", "validation loss", "E / E′ (examples ratio)"],
        [[f"{p['batch_size']:,}", str(p["seed"]), f"{p['loss']:.4f}", number_text(p["examples_ratio"], ".2f", "outside the curve")]
         for p in critical.points],
    )
    return (
        f"<p>The data-efficiency curve of batch size {critical.smallest_batch:,} (mean over seeds; each seed made "
        "non-increasing before inversion), and each frontier point's examples ratio: the examples it trained over the examples "
        "the smallest batch size needs for the same loss, on the same seed.</p>" + curve + points
    )


# -- the page -------------------------------------------------------------------------------

def _table(headers: list[str], rows: Iterable[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _frontier_section(rows: list[FrontierRow], advice: str | None, sizes: list[int], png: str | None) -> str:
    """First on the page for a frontier study; empty for a joint one."""
    if png is None:
        return ""
    table = _table(
        ["batch size", "seeds", "val loss (mean ± 95% CI)", "val acc (mean ± 95% CI)", "lr", "effective lr", "momentum", "steps", "examples/s", "searched"],
        [[
            f"{r.batch_size:,}", str(r.n_seeds), f"{r.val_loss_mean:.4f} ± {number_text(r.val_loss_ci95, '{:.4f}'.format, '-')}",
            f"{number_text(r.val_acc_mean, '{:.4f}'.format, '-')} ± {number_text(r.val_acc_ci95, '{:.4f}'.format, '-')}",
            f"{r.lr:.4g}", f"{r.effective_lr:.4g}", f"{r.momentum:.3f}", number_text(r.steps, "{:,}".format, "-"),
            number_text(r.examples_per_second, "{:,.0f}".format, "-"), str(r.search_trials),
        ] for r in rows],
    )
    unmeasured = [b for b in sizes if b not in {r.batch_size for r in rows}]
    missing = f"<p>Not on the frontier yet (no completed seed re-run): batch sizes {', '.join(f'{b:,}' for b in unmeasured)}.</p>" if unmeasured else ""
    return f"""<h2>The frontier: what the batch size changes at this budget</h2>
<p>Each batch size had its own learning-rate/momentum search (pruned only against trials of the same batch size); its best
configuration was then re-run with seeds paired across batch sizes (seed k: the same initial weights and example order at
every batch size). The numbers are the means over those re-runs, with t-based 95% intervals; comparisons between batch sizes
use the paired differences.</p>
{'<p><b>' + html.escape(advice) + '</b></p>' if advice else ''}
<img src="{png}" alt="the frontier: mean validation loss per batch size with 95% intervals, and the configuration each uses">
{table}{missing}"""


def _batch_size_table(results: list[BatchSizeResult]) -> str:
    rows = []
    for r in results:
        best = r.best
        rows.append([
            f"{r.batch_size:,}", str(r.sampled), str(r.completed), number_text(r.best_loss, ".4f"), number_text(r.best_val_acc, ".4f"),
            number_text(Hyperparams.of(best).lr if best else None, ".4g"), number_text(r.best_effective_lr, ".4g"),
            number_text(r.best_momentum, ".3f"), str(best.number) if best else "–",
        ])
    return _table(
        ["batch size", "trials sampled", "completed", "best val loss", "best val acc", "lr (sampled)", "effective lr", "momentum", "best trial"],
        rows,
    )


def _schedule_section(rows: list[ScheduleRow]) -> str:
    """Best loss per starting batch size under each batch-size schedule; nothing when the study had one schedule."""
    if not rows:
        return ""
    schedules = list(rows[0].best_loss)
    table = _table(
        ["starting batch size", *(f"{s}: best val loss (completed/sampled)" for s in schedules)],
        ([f"{r.batch_size:,}", *(f"{number_text(r.best_loss[s], '.4f')} ({r.completed[s]}/{r.sampled[s]})" for s in schedules)] for r in rows),
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
            str(e.source_trial), f"{e.batch_size:,}", f"{e.lr:.4g}", number_text(e.effective_lr, ".4g"), f"{e.momentum:.3f}", number_text(e.val_loss, ".4f"),
            str(e.seeds), mean_spread_text(e.test_acc), f"{min(e.test_acc):.4f} – {max(e.test_acc):.4f}" if e.test_acc else "–",
            mean_spread_text(e.test_loss),
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
        record = row.record
        rows.append([
            str(rank), str(row.number), f"{row.batch_size:,}", number_text(row.lr, ".4g"), number_text(record.effective_lr, ".4g"),
            number_text(row.momentum, ".3f"), number_text(record.steps, ","), number_text(record.examples_seen, ","),
            number_text(record.final_val_loss, ".4f"), number_text(record.final_val_acc, ".4f"), number_text(record.wall_seconds, ".1f") + " s",
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
    attributes = StudyRecord.of(study)
    spec = attributes.spec or {}
    dataset, user_data, model = spec.get("dataset") or {}, spec.get("data") or {}, spec.get("model") or {}
    data_text = user_data.get("class_path") or f"{dataset.get('name', '?')}{' (' + str(dataset.get('path')) + ')' if dataset.get('path') else ''}"
    model_text = model.get("class_path") or f"{model.get('name', '?')} {model.get('args', '')}"
    meta = (
        f"Storage {redact(url)}. {len(trials)} trials: {state_counts(trials)}. "
        f"Data: {data_text}; model: {model_text}; optimizer: {(spec.get('optimizer') or {}).get('name', 'sgd')}; budget: "
        + (f"{spec['budget_seconds']:g} s of training per trial (steps from the speed profile); " if spec.get("budget_seconds") else
           f"{attributes.budget_examples or 0:,} training examples per trial, validation every {attributes.report_every_examples or 0:,}; ")
        + f"{attributes.lr_parameterization or ''}. Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Batch-size report: {html.escape(study.study_name)}</title>
<style>{_STYLE}</style></head><body>
<h1>What difference does batch size make? Study <code>{html.escape(study.study_name)}</code></h1>
<p class="meta">{html.escape(meta)}</p>
<div class="summary"><h2 style="border:0;margin-top:0.5em">Summary</h2>{sections['summary']}</div>
{sections['frontier']}
<h2>How well each batch size was tuned</h2>
<p>The expected best validation loss over k of each batch size's search draws, with a bootstrap band: a curve still
falling at its last draws means that batch size's search had not settled, and comparisons with it are weaker.</p>
<img src="{sections['tuning_png']}" alt="expected best-of-k validation loss per batch size">
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
<h2>Why: the critical batch size, sharpness and generalization gap</h2>
<p>At a fixed budget of E examples, a batch size B makes the progress of about E / (1 + B/B_crit) examples at a small
batch (McCandlish et al. 2018): up to about B_crit a larger batch costs few extra examples, beyond it each doubling costs
up to twice the examples for the same loss. A frontier study measures B_crit: its smallest batch size is also trained on
1/8, 1/4 and 1/2 of the budget (the data-efficiency curve), and each frontier point is inverted through that curve. The
gradient noise scale B_simple = tr(Σ)/|G|² is a proxy for it, measured by the probe along a run; the frontier figure draws
the frontier it predicts. Large batches are said to end in sharper minima that generalize worse (Keskar et al. 2016):
sharpness is the largest Hessian eigenvalue of the training loss over a fixed training subset (Lanczos, to a relative
change below the study's tolerance), compared between batch sizes only relative to the learning rate's stability
threshold; the gap is the validation loss minus the loss on a fixed training subset.</p>
{sections['critical']}
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


def write_report(report: StudyReport, study: optuna.Study, url: str, out: Path) -> Path:
    """Write report.html, its figures and summary.json (the report serialized) into `out`; returns the page."""
    out.mkdir(parents=True, exist_ok=True)
    trials, done, results = report.ranked_trials, report.completed_trials, report.per_batch_size
    sizes = [r.batch_size for r in results]
    fits = (report.lr_fits[0], report.lr_fits[1])
    advice, critical, rows = report.recommendation, report.critical_batch, report.frontier
    sections = {
        # The recommendation opens the frontier section, just below: not twice on one page.
        "summary": "".join(f"<p>{html.escape(line)}</p>" for line in report.summary if not advice or line != advice.reason),
        "frontier": _frontier_section(
            rows, advice.reason if advice else None, sizes,
            figure_frontier(rows, sizes, report.lr_exponent, out / "frontier.png", critical) if report.is_frontier else None,
        ),
        "critical": _critical_section(critical),
        "tuning_png": figure_tuning(report.tuning, out / "tuning.png"),
        "best_png": figure_best_per_batch_size(results, done, out / "best_per_batch_size.png", report.probe),
        "diagnostics_png": figure_sharpness_and_gap(trials, results, out / "sharpness_and_gap.png"),
        "probe": _probe_section(report.probe, study.study_name),
        "lr_png": figure_lr_and_momentum(results, done, fits, out / "lr_and_momentum.png"),
        "curves_png": figure_curves(results, report.budget_examples, out / "loss_curves.png"),
        "pruning_png": figure_pruning(trials, report.budget_examples, out / "pruning.png"),
        "batch_table": _batch_size_table(results),
        "schedules": _schedule_section(report.schedules),
        "evaluation": _evaluation_section(report.evaluation, study.study_name),
        "top_table": _top_trials_table(done),
        "two_speeds": _two_speeds_section(report.speeds, report.profiles, trials, out),
    }
    page = out / "report.html"
    page.write_text(render_html(study, url, trials, done, sections), encoding="utf-8")
    (out / "summary.json").write_text(report.to_json(), encoding="utf-8")
    return page
