"""What the user sees while a study runs: a line per checkpoint, a line per trial, a summary."""
from __future__ import annotations

import statistics
import sys
from datetime import datetime
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from search.analysis.evaluation import EvaluationResult, mean_spread_text
from search.analysis.study_report import StudyReport
from search.config.spec import StudySpec
from search.record import (
    BATCH_SIZE,
    LR,
    MOMENTUM,
    Checkpoint,
    EvaluationRecord,
    Hyperparams,
    StudyRecord,
    TrialRecord,
)
from search.render.text import number_text
from search.store.urls import backend, redact


def trial_line(trial: FrozenTrial) -> str:
    record = TrialRecord.of(trial)
    params = trial.params
    value = trial.value if record.final_val_loss is None else record.final_val_loss
    timed = record.train_seconds is not None and record.predicted_seconds is not None
    return (
        f"trial {trial.number:>4}  B={params.get(BATCH_SIZE, '?'):>5}  lr={number_text(params.get(LR), '.4g', 'nan')} "
        f"(eff {number_text(record.effective_lr, '.4g', 'nan')})  momentum={number_text(params.get(MOMENTUM), '.3f', 'nan')}  "
        f"val_loss={number_text(value, '.4f', str(value))}  {trial.state.name:<8} {number_text(record.examples_seen, ',', '?'):>9} ex  "
        f"{record.wall_seconds or 0:7.1f}s  {record.examples_per_second or 0:8,.0f} ex/s"
        + (f"  trained {record.train_seconds:.1f}s, predicted {record.predicted_seconds:.1f}s" if timed else "")
        + (f"  ({record.reason})" if record.reason else "")
    )


def summary(report: StudyReport, study: optuna.Study, dashboard_url: str) -> str:
    """The end of a run: the trials by state, the best trial, a frontier study's recommendation, the dashboard command."""
    lines = [f"study '{report.study}': {sum(report.trials.values())} trials (" + ", ".join(f"{n} {state}" for state, n in report.trials.items()) + ")"]
    if report.completed_trials:
        best = report.completed_trials[0]
        record = TrialRecord.of(best)
        lines.append("best " + trial_line(best))
        lines.append(
            f"     val_acc={number_text(record.final_val_acc, '.4f', '-')}  steps={record.steps}  "
            f"examples_seen={number_text(record.examples_seen, ',', '-')}  {StudyRecord.of(study).lr_parameterization or ''}"
        )
    else:
        lines.append("no trial has completed yet")
    if report.recommendation is not None:
        lines.append(report.recommendation.reason)
    lines.append(f"browse the study: optuna-dashboard {dashboard_url}")
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """12s, 4m05s, 1h23m: what a person reads in a progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """What a worker prints while it runs, the way Lightning and Optuna users expect it.

    On a terminal, a tqdm bar per running trial (examples, rate, ETA); in a log (not a
    terminal) no bar, and every validation checkpoint is a line with the trial's elapsed time,
    its rate and its ETA. After each trial: its line, then the study's progress towards
    n_trials with an ETA from the mean duration of its finished trials. `quiet` leaves out the
    bar and the checkpoint lines.
    """

    def __init__(self, spec: StudySpec, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.spec = spec
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty()
        self.bar: tqdm | None = None
        self.total: dict[int, int] = {}  # trial number -> examples it will train
        # A frontier run until converged: its n_trials is only the most, the planned trials are fewer.
        self.planned = spec.frontier_trials(added=False) if spec.strategy == "frontier" and spec.frontier.until_converged else None

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def on_step(self, trial: optuna.Trial, examples_seen: int, total_examples: int) -> None:
        self.total[trial.number] = total_examples
        if self.quiet or not self.terminal:
            return
        if self.bar is None:
            self.bar = tqdm(total=total_examples, desc=f"trial {trial.number}", unit="ex", unit_scale=True, leave=False, file=self.stream, dynamic_ncols=True)
        self.bar.update(examples_seen - self.bar.n)

    def on_checkpoint(self, trial: optuna.Trial, checkpoint: Checkpoint) -> None:
        if self.quiet:
            return
        total = self.total.get(trial.number) or (self.spec.budget_examples if self.spec.budget_seconds is None else 0)
        accuracy = "" if checkpoint.val_acc is None else f"  val_acc {checkpoint.val_acc:.3f}"
        elapsed = (datetime.now() - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
        rate = checkpoint.examples_seen / elapsed if elapsed > 0 else 0.0
        pace = f"  {duration(elapsed)} elapsed, {rate:,.0f} ex/s" + (f", ETA {duration((total - checkpoint.examples_seen) / rate)}" if rate and total else "")
        self._write(
            f"  trial {trial.number:>4}  {checkpoint.examples_seen:>10,}{f'/{total:,}' if total else ''} examples  "
            f"train_loss {checkpoint.train_loss:.4f}  val_loss {checkpoint.val_loss:.4f}{accuracy}{pace}"
        )

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """An Optuna callback: the trial's line, then the study's progress."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.total.pop(trial.number, None)
        self._write(trial_line(trial))
        self._write(study_progress(study, self.spec.n_trials, self.planned))


def study_progress(study: optuna.Study, n_trials: int | None, planned: int | None = None) -> str:
    """`study 12/64 finished, 2 running; ETA 1h20m` from the mean wall time of its finished trials. With
    `planned` (a frontier run until converged, whose n_trials is only its most), the ETA is for the planned
    trials, with the most beside it: how many trials are added is not known in advance."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    running = sum(t.state == TrialState.RUNNING for t in trials)
    walls = [w for w in (TrialRecord.of(t).wall_seconds for t in finished) if w]
    if planned is not None and n_trials:
        line = f"study    {len(finished)} finished ({planned} planned, at most {n_trials} until converged), {running} running"
    else:
        line = f"study    {len(finished)}{f'/{n_trials}' if n_trials else ''} finished, {running} running"
    if n_trials and walls and len(finished) < n_trials:
        # Trials that run in parallel finish together: divide by the workers seen running (at least 1).
        mean, workers = statistics.fmean(walls), max(1, running)
        if planned is not None and len(finished) < planned:
            line += f"; ETA {duration((planned - len(finished)) * mean / workers)} for the planned trials, at most {duration((n_trials - len(finished)) * mean / workers)}"
        elif planned is None:
            line += f"; ETA {duration((n_trials - len(finished)) * mean / workers)}"
        line += f" at {duration(mean)} a trial"
    return line


def print_header(spec: StudySpec, url: str, data: str, workers: str) -> None:
    """What a run is about to do: storage, data, model, budget, steps per batch size, search, workers."""
    storage_note = " (embedded SQLite: one worker; use PostgreSQL for several)" if backend(url) == "sqlite" else ""
    steps = "  ".join(f"{b}:{spec.steps(b)}" for b in spec.search_space.batch_sizes())
    budget = f"budget {spec.budget_examples:,} examples, validation every {spec.report_every():,}"
    if spec.budget_seconds is not None:
        budget = f"budget {spec.budget_seconds:g} s of training, validation every {spec.report_every_ms() / 1000:g} s (predicted)"
        steps = "from each device's speed profile, in each trial's line"
    print(
        f"study    {spec.name}  storage {redact(url)}{storage_note}\n"
        f"data     {data}\n"
        f"model    {spec.model.describe()}  optimizer {spec.optimizer.name}  {budget}\n"
        f"steps    per batch size  {steps}\n"
        f"search   sampler {spec.sampler.name} (seed {spec.sampler.seed})  pruner {spec.pruner.name}  "
        f"{spec.lr_parameterization.describe()}\n"
        + (f"frontier {spec.frontier.trials_per_batch_size} lr/momentum trials per batch size (sampled and pruned within it), "
           f"then {spec.frontier.seeds} paired seeds of each best"
           + (f", then the efficiency curve (the smallest batch size's best on 1/8, 1/4, 1/2 of the budget, {spec.frontier.seeds} seeds)"
              if spec.has_efficiency_curve() else "")
           + f": {spec.n_trials} trials\n" if spec.strategy == "frontier" else "")
        + f"workers  {workers}",
        flush=True,
    )


def evaluation_line(run: FrozenTrial) -> str:
    """A test-set run of `search.evaluate`: its configuration, seed (or kept weights) and result."""
    record = EvaluationRecord.of(run)
    hp = Hyperparams.of(run)
    outcome = (
        f"test_loss {number_text(record.test_loss, '.4f')}  test_acc {number_text(record.test_acc, '.4f')}"
        if run.state == TrialState.COMPLETE else f"FAILED ({record.reason or 'see above'})"
    )
    return (
        f"trial {record.source_trial:>4}  B={hp.batch_size:>5}  lr={hp.lr:.4g} "
        f"(eff {number_text(record.effective_lr, '.4g')})  momentum={hp.momentum:.3f}  "
        f"{'kept weights' if record.checkpoint_path else f'seed {record.seed}'}  {outcome}  "
        f"{number_text(record.wall_seconds, '.1f')}s"
    )


def evaluation_summary_line(result: EvaluationResult) -> str:
    """A configuration's test-set results over its seeds."""
    return (
        f"trial {result.source_trial:>4}  B={result.batch_size:>5}  val_loss {number_text(result.val_loss, '.4f')}  "
        f"test_acc {mean_spread_text(result.test_acc)}  test_loss {mean_spread_text(result.test_loss)}  ({result.seeds} seeds)"
    )
