"""`StudyReport`: everything the service concludes about one study, computed once.

`analyze(study)` runs every analysis of this package on the study's trials; the HTML page
(`search.render.page`), `search.best --frontier`, the console and `summary.json` all read the one
object it returns, so no two of them can disagree. `summary.json` is this object serialized
(`to_json`), versioned, with a JSON Schema (`json_schema`, committed as docs/summary.schema.json).
"""
from __future__ import annotations

import json
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from search.analysis.critical import CriticalBatch, critical_batch, critical_sentences
from search.analysis.diagnostics import diagnostics_summary, probe_sentence
from search.analysis.evaluation import EvaluationResult, evaluation_results
from search.analysis.frontier import (
    DEFAULT_MARGIN,
    ExponentFit,
    FrontierRow,
    Recommendation,
    claims,
    exponent_fit,
    frontier_rows,
    recommend,
    seed_losses,
)
from search.analysis.per_batch_size import BatchSizeResult, per_batch_size
from search.analysis.pruning import PruningSavings, examples_at_end, pruning_savings
from search.analysis.scaling import ScalingFit, lr_fits
from search.analysis.schedules import (
    ScheduleRow,
    schedule_comparison,
    schedule_sentence,
)
from search.analysis.speeds import DeviceSpeeds, two_speeds, two_speeds_sentence
from search.analysis.summary import summary_lines
from search.analysis.tuning import TuningCurve, tuning_curves, tuning_sentences
from search.measure.profile import SpeedProfile
from search.record import (
    Hyperparams,
    ProbeResult,
    StudyRecord,
    TrialRecord,
    latest_probe,
    ranked,
)
from search.store.measurements import profiles_in
from search.store.trials import best_first, without_superseded

# Raised when a field is added, renamed or changes meaning: readers of summary.json check it.
SCHEMA_VERSION = 2  # 2 (2026-12-08): critical_batch.sweeps


class BatchSizeBest(BaseModel):
    """A batch size's best completed trial in the search (a joint study's answer; an upper bound from `completed` draws)."""

    batch_size: int
    sampled: int  # trials of any state that drew it
    completed: int
    best_trial: int | None
    best_val_loss: float | None
    best_val_acc: float | None
    lr: float | None
    effective_lr: float | None
    momentum: float | None


class StudyReport(BaseModel):
    """What a study says about batch size, in numbers and in sentences (see the module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    version: int = SCHEMA_VERSION
    study: str
    strategy: Literal["joint", "frontier"]
    budget_examples: int  # examples per trial (with a time budget: the most any trial planned)
    trials: dict[str, int]  # trials by state, the efficiency curve's shorter runs included
    recommendation: Recommendation | None  # a frontier study's recommended batch size, lr and momentum, with why
    frontier: list[FrontierRow]  # a frontier study: one row per batch size, mean over paired seeds
    lr_exponent: ExponentFit | None  # how the best effective lr scales with the batch size, with its interval
    frontier_claims: list[str]  # the paired comparisons between batch sizes, in words
    tuning: list[TuningCurve]  # per batch size: the expected best-of-k curve of its search, and whether it has converged
    summary: list[str]  # every sentence of the report's summary, in order (the recommendation first)
    batch_sizes: list[BatchSizeBest]
    lr_fits: list[ScalingFit | None]  # power laws of the best lr and of lr / (1 - momentum) against the batch size
    pruning: PruningSavings
    evaluation: list[EvaluationResult]  # test-set runs of `search.evaluate`
    critical_batch: CriticalBatch | None  # a frontier study: B_crit measured, B_simple, the predicted frontier
    probe: ProbeResult | None  # the newest noise-scale probe
    speeds: list[DeviceSpeeds]  # per device: best loss by examples seen and by training seconds
    schedules: list[ScheduleRow]  # decay the lr or grow the batch, where the study sampled it
    profiles: list[SpeedProfile]  # each device's speed profile
    # For the renderers, not serialized: the trials behind the numbers.
    per_batch_size: SkipJsonSchema[list[BatchSizeResult]] = Field(default_factory=list, exclude=True)
    ranked_trials: SkipJsonSchema[list[FrozenTrial]] = Field(default_factory=list, exclude=True)  # all but the efficiency curve's
    completed_trials: SkipJsonSchema[list[FrozenTrial]] = Field(default_factory=list, exclude=True)  # best first

    @property
    def is_frontier(self) -> bool:
        return self.strategy == "frontier"

    def to_json(self) -> str:
        """summary.json: this report without the trials, NaN and infinities as null."""
        return json.dumps(self.model_dump(mode="json"), indent=2, allow_nan=False)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return cls.model_json_schema(mode="serialization")


def _batch_size_best(result: BatchSizeResult) -> BatchSizeBest:
    best = result.best
    hp = Hyperparams.of(best) if best is not None else None
    return BatchSizeBest(
        batch_size=result.batch_size, sampled=result.sampled, completed=result.completed, best_trial=best.number if best else None,
        best_val_loss=result.best_loss, best_val_acc=result.best_val_acc, lr=hp.lr if hp else None,
        effective_lr=result.best_effective_lr, momentum=hp.momentum if hp else None,
    )


def analyze(study: optuna.Study, evaluation_study: optuna.Study | None = None, target_loss: float | None = None) -> StudyReport:
    """Every analysis of the study (and of its test-set runs, when `search.evaluate` made some), once."""
    all_trials = study.get_trials(deepcopy=False)
    current = without_superseded(all_trials)  # re-runs of a batch size's earlier best, replaced by its later best's
    trials = ranked(current)  # the efficiency curve's shorter runs enter the critical batch size only
    records = [TrialRecord.of(t) for t in trials]
    attributes = StudyRecord.of(study)
    budget = int(attributes.budget_examples or max((r.examples_seen or 0 for r in records), default=0))
    if (attributes.spec or {}).get("budget_seconds"):
        # A time budget: the longest trial planned (steps from the speed profile).
        budget = max((examples_at_end(t, budget) for t, r in zip(trials, records) if r.budget_seconds is not None), default=budget)
    results = per_batch_size(trials)
    sizes = [r.batch_size for r in results]
    fits = lr_fits(results)
    savings = pruning_savings(trials, budget)
    evaluation = evaluation_results(trials, evaluation_study.get_trials(deepcopy=False) if evaluation_study else [])
    rows = frontier_rows(trials)
    frontier = any(r.frontier_role for r in records)
    fit = exponent_fit(rows)
    margin = float(((attributes.spec or {}).get("frontier") or {}).get("margin", DEFAULT_MARGIN))
    advice = recommend(trials, rows, margin)
    compared = claims(trials, rows, fit, margin) if frontier else []
    tuning = tuning_curves(trials, {r.batch_size: r.val_loss_ci95 for r in rows})
    under = {c.batch_size for c in tuning if c.converged is False}
    summary = ([advice.reason] if advice else []) + compared
    if advice and under & {advice.batch_size, advice.reference_batch_size}:
        summary.append(
            f"Caveat: the recommendation rests on under-tuned batch sizes ({', '.join(f'{b:,}' for b in sorted(under & {advice.batch_size, advice.reference_batch_size}))}): "
            "their best configurations may still improve with more search trials, which could change the answer."
        )
    summary += tuning_sentences(tuning)
    summary += summary_lines(trials, results, fits, savings, evaluation, frontier=frontier)
    probe = latest_probe(study.user_attrs)
    critical = critical_batch(current, seed_losses(trials), probe) if frontier else None
    summary += critical_sentences(critical, sizes) if critical else [probe_sentence(probe)]
    summary += diagnostics_summary(trials)
    speeds = two_speeds(trials, target_loss)
    summary += [two_speeds_sentence(s) for s in speeds]
    schedules = schedule_comparison(trials)
    summary += [line for line in [schedule_sentence(schedules)] if line]
    counts = {state.name.lower(): sum(t.state == state for t in all_trials) for state in TrialState}
    return StudyReport(
        study=study.study_name, strategy="frontier" if frontier else "joint", budget_examples=budget,
        trials={state: n for state, n in counts.items() if n}, recommendation=advice, frontier=rows, lr_exponent=fit,
        frontier_claims=compared, tuning=tuning, summary=summary, batch_sizes=[_batch_size_best(r) for r in results], lr_fits=list(fits),
        pruning=savings, evaluation=evaluation, critical_batch=critical, probe=probe, speeds=speeds, schedules=schedules,
        profiles=profiles_in(study.user_attrs), per_batch_size=results, ranked_trials=trials,
        completed_trials=best_first(trials),
    )
