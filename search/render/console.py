"""What the user sees while a study runs: a line per checkpoint, a line per trial, a summary."""
from __future__ import annotations

import functools
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.config.spec import StudySpec
from search.record import Checkpoint, TrialRecord
from search.render.text import number_text
from search.store.urls import backend, redact


def checkpoint_line(budget_examples: int | None, trial: optuna.Trial, checkpoint: Checkpoint) -> None:
    """Bind the budget with functools.partial: no storage read at each validation (None: a time budget)."""
    budget = f"/{budget_examples:,}" if budget_examples else ""
    accuracy = "" if checkpoint.val_acc is None else f"  val_acc {checkpoint.val_acc:.3f}"
    print(
        f"  trial {trial.number:>4}  {checkpoint.examples_seen:>10,}{budget} examples  "
        f"train_loss {checkpoint.train_loss:.4f}  val_loss {checkpoint.val_loss:.4f}{accuracy}",
        flush=True,
    )


def trial_line(trial: FrozenTrial) -> str:
    record = TrialRecord.of(trial)
    params = trial.params
    value = trial.value if record.final_val_loss is None else record.final_val_loss
    timed = record.train_seconds is not None and record.predicted_seconds is not None
    return (
        f"trial {trial.number:>4}  B={params.get('batch_size', '?'):>5}  lr={number_text(params.get('lr'), '.4g', 'nan')} "
        f"(eff {number_text(record.effective_lr, '.4g', 'nan')})  momentum={number_text(params.get('momentum'), '.3f', 'nan')}  "
        f"val_loss={number_text(value, '.4f', str(value))}  {trial.state.name:<8} "
        f"{record.wall_seconds or 0:7.1f}s  {record.examples_per_second or 0:8,.0f} ex/s"
        + (f"  trained {record.train_seconds:.1f}s, predicted {record.predicted_seconds:.1f}s" if timed else "")
        + (f"  ({record.reason})" if record.reason else "")
    )


def print_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """An Optuna callback: one line per finished trial."""
    print(trial_line(trial), flush=True)


def summary(study: optuna.Study, dashboard_url: str) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    lines = [
        f"study '{study.study_name}': {len(trials)} trials ("
        + ", ".join(f"{n} {name.lower()}" for name, n in counts.items() if n)
        + ")"
    ]
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    if completed:
        best = min(completed, key=lambda t: t.value)  # type: ignore[arg-type, return-value]
        record = TrialRecord.of(best)
        lines.append("best " + trial_line(best))
        lines.append(
            f"     val_acc={number_text(record.final_val_acc, '.4f', '-')}  steps={record.steps}  "
            f"examples_seen={number_text(record.examples_seen, ',', '-')}  {study.user_attrs.get('lr_parameterization', '')}"
        )
    else:
        lines.append("no trial has completed yet")
    lines.append(f"browse the study: optuna-dashboard {dashboard_url}")
    return "\n".join(lines)


def progress_listeners(spec: StudySpec, quiet: bool) -> tuple[Callable[[optuna.Trial, Checkpoint], None] | None, Callable[[optuna.Study, FrozenTrial], None]]:
    """What a worker prints: a line per validation checkpoint (unless quiet) and a line per finished trial."""
    budget = None if spec.budget_seconds is not None else spec.budget_examples
    return (None if quiet else functools.partial(checkpoint_line, budget)), print_trial


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
        f"workers  {workers}",
        flush=True,
    )
