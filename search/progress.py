"""What the user sees while a study runs: a line per checkpoint, a line per trial, a summary."""
from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.training import Checkpoint


def checkpoint_line(budget_examples: int | None, trial: optuna.Trial, checkpoint: Checkpoint) -> None:
    """Bind the budget with functools.partial: no storage read at each validation (None: a time budget)."""
    budget = f"/{budget_examples:,}" if budget_examples else ""
    print(
        f"  trial {trial.number:>4}  {checkpoint.examples_seen:>10,}{budget} examples  "
        f"train_loss {checkpoint.train_loss:.4f}  val_loss {checkpoint.val_loss:.4f}  val_acc {checkpoint.val_acc:.3f}",
        flush=True,
    )


def trial_line(trial: FrozenTrial) -> str:
    attrs = trial.user_attrs
    params = trial.params
    value = attrs.get("final_val_loss", trial.value)
    reason = attrs.get("reason", "")
    return (
        f"trial {trial.number:>4}  B={params.get('batch_size', '?'):>5}  lr={params.get('lr', float('nan')):.4g} "
        f"(eff {attrs.get('effective_lr', float('nan')):.4g})  momentum={params.get('momentum', float('nan')):.3f}  "
        f"val_loss={value if value is None else f'{value:.4f}'}  {trial.state.name:<8} "
        f"{attrs.get('wall_seconds', 0):7.1f}s  {attrs.get('examples_per_second', 0):8,.0f} ex/s"
        + (f"  trained {attrs['train_seconds']:.1f}s, predicted {attrs['predicted_seconds']:.1f}s" if "predicted_seconds" in attrs and "train_seconds" in attrs else "")
        + (f"  ({reason})" if reason else "")
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
        lines.append("best " + trial_line(best))
        lines.append(
            f"     val_acc={best.user_attrs.get('final_val_acc', float('nan')):.4f}  steps={best.user_attrs.get('steps')}  "
            f"examples_seen={best.user_attrs.get('examples_seen'):,}  {study.user_attrs.get('lr_parameterization', '')}"
        )
    else:
        lines.append("no trial has completed yet")
    lines.append(f"browse the study: optuna-dashboard {dashboard_url}")
    return "\n".join(lines)
