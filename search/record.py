"""Typed, torch-free records of what a trial samples and produces: written by the trial, read by storage views, analysis and reports.

A trial's results are stored as Optuna user attributes, one per field of `TrialRecord` (a
test-set run of `search.evaluate`: `EvaluationRecord`). Every attribute name is defined here
once: the trial writes `record.attrs()`, readers use `TrialRecord.of(trial).effective_lr`, and
the SQL views (`search.store.views`) get one column per field, typed from its annotation.
Standard library only, so storage views, analysis and the HTML report never import torch.
"""
from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Literal, Mapping, Protocol, TypeVar


@dataclass(frozen=True)
class Checkpoint:
    examples_seen: int
    train_loss: float
    val_loss: float
    val_acc: float | None  # None unless the study's loss is a classification loss


# The names trials sample their parameters under (`search.study.space`); readers use `Hyperparams.of(trial)`.
BATCH_SIZE, LR, MOMENTUM, ONE_MINUS_MOMENTUM, SCHEDULE = "batch_size", "lr", "momentum", "one_minus_momentum", "schedule"
DEFAULT_SCHEDULE = "decay_lr"


class _HasParams(Protocol):
    @property
    def params(self) -> dict[str, Any]: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Hyperparams:
    batch_size: int
    lr: float  # as sampled, in the study's parameterization
    momentum: float
    effective_lr: float  # what the optimizer gets
    schedule: str  # decay_lr | grow_batch

    @classmethod
    def of(cls, trial: _HasParams) -> Hyperparams:
        """What a trial sampled (it must have sampled: see `batch_size_of` for a trial that may not have),
        with the effective learning rate it stored; NaN where a trial that failed early stored none."""
        params = trial.params
        effective = trial.user_attrs.get("effective_lr")
        return cls(
            int(params[BATCH_SIZE]), float(params[LR]), float(params.get(MOMENTUM, math.nan)),
            float(effective) if is_finite(effective) else math.nan, str(params.get(SCHEDULE, DEFAULT_SCHEDULE)),
        )


def batch_size_of(trial: _HasParams) -> int | None:
    """The trial's batch size, or None if it failed before sampling one."""
    value = trial.params.get(BATCH_SIZE)
    return None if value is None else int(value)


def schedule_of(trial: _HasParams) -> str | None:
    """The batch-size schedule a trial sampled, or None where the study offered only one (it sampled none)."""
    value = trial.params.get(SCHEDULE)
    return None if value is None else str(value)


# `search.probe` stores each run on the study under this prefix and its UTC time.
PROBE_PREFIX = "noise_scale_probe:"
# What probes stored before a field existed read as.
_PROBE_DEFAULTS = {
    "hyperparams_from": "untuned: the middle of the search space", "tuned": False,
    "normalization": "batch norm over each chunk (a probe from before ghost groups)", "normalization_group": None,
}


@dataclass(frozen=True)
class ProbePoint:
    """One noise-scale estimate along the probe's run (`search.measure.noise_scale`)."""

    steps: int
    examples_seen: int
    train_loss: float | None  # mean training loss over the steps since the previous point; None at initialization
    b_simple_loss: float | None  # the training loss on the estimate's big batches
    gradient_sq: float  # unbiased |G|^2
    trace: float  # unbiased tr(Sigma)
    b_simple: float | None  # tr(Sigma) / |G|^2; None where |G|^2 was not positive
    stderr: float | None  # jackknife standard error of b_simple


@dataclass(frozen=True)
class ProbeResult:
    """One run of `search.probe`: B_simple along a training run, stored on the study as `as_dict()`."""

    created: str  # UTC, ISO 8601: also the stored key's suffix
    batch_size: int
    lr: float
    effective_lr: float
    momentum: float
    hyperparams_from: str  # in words: the frontier's tuned best, or the middle of the search space
    tuned: bool
    normalization: str  # in words: how batch norm was grouped while measuring
    normalization_group: int | None
    train_examples: int
    augmentation: bool
    seed: int
    small_batch: int
    big_batch: int
    measurements: int  # big batches per point
    points: tuple[ProbePoint, ...]
    seconds: float
    # The run's learning-rate schedule after warm-up: "constant" (the default since 2026-12-07, so that annealing does not
    # move |G|^2 and B_simple can be read at a loss) or the study's decay ("linear", "cosine"), as every earlier probe ran.
    schedule: str = "study"

    @property
    def last(self) -> ProbePoint:
        return self.points[-1]

    @property
    def b_simple(self) -> float | None:
        """B_simple at the end of the run."""
        return self.last.b_simple

    @property
    def suggested_range(self) -> tuple[float, float] | None:
        return None if self.b_simple is None else critical_range(self.b_simple)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ProbeResult:
        """A stored probe, older ones included (they lack some fields, or name B_simple `critical_batch_size`)."""
        known = {f.name for f in fields(cls)}
        values = {**_PROBE_DEFAULTS, **{k: v for k, v in raw.items() if k in known}}
        values.setdefault("seed", 0)
        values.setdefault("augmentation", True)
        values.setdefault("seconds", 0.0)
        values.setdefault("lr", values.get("effective_lr", math.nan))
        points = []
        for point in raw.get("points", []):
            point = {**point, "b_simple": point.get("b_simple", point.get("critical_batch_size"))}
            points.append(ProbePoint(**{f.name: point.get(f.name) for f in fields(ProbePoint)}))
        return cls(**{**values, "points": tuple(points)})


def critical_range(b_simple: float) -> tuple[float, float]:
    """The batch sizes worth searching, by McCandlish et al.'s trade-off E = E_min (1 + B / B_crit).

    Below B_crit / 8 a smaller batch saves at most 12% of the examples while taking 8x the
    steps; above 2 B_crit it needs at least 3x the examples for the same loss.
    """
    return b_simple / 8, 2 * b_simple


def latest_probe(study_attrs: Mapping[str, Any]) -> ProbeResult | None:
    """The newest noise-scale probe stored on a study (keys sort by their UTC time)."""
    keys = sorted(k for k in study_attrs if k.startswith(PROBE_PREFIX))
    return ProbeResult.from_dict(study_attrs[keys[-1]]) if keys else None

# How a field reads in SQL: a whole number, a floating-point number, or text.
Kind = Literal["integer", "real", "text"]

_Record = TypeVar("_Record", bound="_Attributes")
_Trial = TypeVar("_Trial", bound="_HasUserAttrs")


class _HasUserAttrs(Protocol):
    @property
    def user_attrs(self) -> dict[str, Any]: ...


class _SetsUserAttrs(Protocol):
    def set_user_attr(self, key: str, value: Any) -> None: ...


def is_finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (bools and text are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def column_kinds(record: type) -> dict[str, Kind]:
    """Each field of a record dataclass, in order, with how SQL reads it (from its annotation).

    A field that may hold text (e.g. `normalization_batch`: "full" or a number) reads as text.
    """
    hints = typing.get_type_hints(record)
    kinds: dict[str, Kind] = {}
    for field in fields(record):
        types = set(typing.get_args(hints[field.name]) or (hints[field.name],)) - {type(None)}
        kinds[field.name] = "text" if str in types else "real" if float in types else "integer"
    return kinds


@dataclass(frozen=True, kw_only=True)
class _Attributes:
    """A record stored as Optuna user attributes, one per field; None means not stored."""

    # Values that trials stored before a field existed read as.
    READ_DEFAULTS: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The attribute names, in field order: the columns of the SQL views."""
        return tuple(field.name for field in fields(cls))

    @classmethod
    def from_attrs(cls: type[_Record], user_attrs: Mapping[str, Any]) -> _Record:
        """The record of stored user attributes; unknown keys (other tools' attributes) are ignored."""
        known = set(cls.names())
        return cls(**{**cls.READ_DEFAULTS, **{k: v for k, v in user_attrs.items() if k in known}})

    @classmethod
    def of(cls: type[_Record], trial: _HasUserAttrs) -> _Record:
        """The record of an Optuna trial (frozen or running)."""
        return cls.from_attrs(trial.user_attrs)

    def attrs(self) -> dict[str, Any]:
        """What is written: every field that has a value."""
        return {name: value for name in self.names() if (value := getattr(self, name)) is not None}

    def store(self, trial: _SetsUserAttrs) -> None:
        """Write `attrs()` to an Optuna trial (one user attribute each)."""
        for name, value in self.attrs().items():
            trial.set_user_attr(name, value)

    def finite(self: _Record) -> _Record:
        """This record with NaN and infinities as None, as the SQL views read them (and valid JSON)."""
        return replace(self, **{
            name: None for name in self.names() if isinstance(value := getattr(self, name), float) and not math.isfinite(value)
        })


# The roles of a frontier study's trials (`frontier_role`, `search.study.frontier`): its lr/momentum
# search, the seed re-runs of each batch size's best, and the efficiency curve (the smallest batch
# size's best on a fraction of the example budget) with the learning-rate sweep that re-tunes it at
# each fraction (reference); the last two are never ranked with the others.
SEARCH, SEED, EFFICIENCY, REFERENCE = "search", "seed", "efficiency", "reference"
SHARE_OF_BUDGET = (EFFICIENCY, REFERENCE)


def ranked(trials: list[_Trial]) -> list[_Trial]:
    """Trials that trained the study's whole example budget: all but the efficiency curve's runs."""
    return [t for t in trials if t.user_attrs.get("frontier_role") not in SHARE_OF_BUDGET]


@dataclass(frozen=True, kw_only=True)
class RunRecord(_Attributes):
    """What every training run stores: a search trial and a test-set run of `search.evaluate` alike."""

    READ_DEFAULTS: ClassVar[Mapping[str, Any]] = {"optimizer": "sgd"}  # the only optimizer before the field existed

    reason: str | None = None  # why it was pruned or failed; "" when it was not
    effective_lr: float | None = None  # the learning rate the optimizer gets
    steps: int | None = None  # optimizer steps planned
    warmup_steps: int | None = None  # of the learning-rate warm-up (search.train.plan.warmup_steps)
    budget_examples: int | None = None
    seed: int | None = None  # fixes the initial weights and the batch order
    schedule: str | None = None  # decay_lr | grow_batch
    device: str | None = None
    optimizer: str | None = None  # "sgd" | "adamw"
    examples_seen: int | None = None  # training examples actually trained
    wall_seconds: float | None = None  # the whole run, validation included
    examples_per_second: float | None = None  # training examples per second of training (validation excluded)
    train_loss: float | None = None  # at the last validation


@dataclass(frozen=True, kw_only=True)
class TrialRecord(RunRecord):
    """Every user attribute a search trial stores (`search.study.objective`).

    The accuracy fields are None when the study's loss is not a classification loss.
    """

    micro_batch_size: int | None = None  # examples per forward/backward pass
    normalization_batch: int | str | None = None  # "full" or the ghost batch size
    worker: str | None = None  # host:pid
    train_seconds: float | None = None  # training, validation excluded
    final_val_loss: float | None = None
    final_val_acc: float | None = None
    best_val_loss: float | None = None  # lowest over the validations
    best_val_acc: float | None = None  # at the validation of the lowest loss
    # A time budget (`budget_seconds`): what the speed profile predicted, and the checkpoint spacing.
    budget_seconds: float | None = None
    predicted_examples_per_second: float | None = None
    predicted_seconds: float | None = None
    report_every_examples: int | None = None
    report_every_ms: int | None = None
    # Diagnostics at the final weights (`search.measure.sharpness`).
    train_subset_loss: float | None = None
    generalization_gap: float | None = None  # validation loss - training-subset loss
    sharpness: float | None = None  # top Hessian eigenvalue of the training loss (Lanczos)
    sharpness_rel_change: float | None = None  # relative change of the estimate in its last iteration
    sharpness_residual: float | None = None  # relative residual bound of the estimate
    sharpness_iterations: int | None = None  # Hessian-vector products
    sharpness_examples: int | None = None  # training images the Hessian is taken over
    # peak lr x sharpness / the stability threshold of SGD with momentum (2(1+m); Nesterov 2(1+m)/(1+2m)); SGD only
    sharpness_lr_relative: float | None = None
    weight_norm: float | None = None  # L2 norm of the trainable parameters at the end
    diagnostics_seconds: float | None = None
    diagnostics_skipped: str | None = None  # why the sharpness was not measured
    retry_of: int | None = None  # the trial number this one re-runs (lost worker or interrupted)
    # `strategy: frontier` (search.study.frontier): "search" (the lr/momentum search within a batch size),
    # "seed" (a re-run of a batch size's best configuration), "reference" (the smallest batch size's best
    # momentum on a fraction of the budget, at one learning rate of the sweep that re-tunes it there: index its
    # place in the sweep) or "efficiency" (the sweep's best on that fraction, seed as its index); the index is the
    # trial's place within its batch size (search) or its seed number (seed): the same role and index train from
    # the same initial weights on the same example order at every batch size.
    frontier_role: str | None = None
    frontier_index: int | None = None
    frontier_slot: int | None = None  # its place in the frontier's order of trials
    frontier_of: int | None = None  # seed, reference, efficiency: the search trial whose configuration it re-runs
    frontier_fraction: float | None = None  # reference, efficiency: the fraction of the example budget it trains
    # The final weights, while the trial is among the study's best `checkpoints.k` completed trials
    # (`search.store.artifacts`): a plain state dict in Optuna's artifact store. Both are removed with the weights.
    checkpoint_artifact_id: str | None = None
    checkpoint_path: str | None = None  # the file: torch.load(path, weights_only=True)


@dataclass(frozen=True, kw_only=True)
class StudyRecord(_Attributes):
    """The attributes of a study: a search study's are written once, when `search.run` creates it
    (`search.store.storage`); a `<study>:evaluation` study's by `search.evaluate`. Speed profiles and
    noise-scale probes sit beside them under their own prefixes (`search.store.measurements`)."""

    spec: dict[str, Any] | None = None  # the StudySpec as JSON (storage left out): what every worker trains
    comparability: dict[str, Any] | None = None  # what makes trials comparable, the data's fingerprint included
    lr_parameterization: str | None = None  # in words, e.g. "effective_lr = lr x sqrt(B / 256)"
    budget_examples: int | None = None
    report_every_examples: int | None = None
    evaluation_of: str | None = None  # an evaluation study: the search study it measures
    protocol: str | None = None  # an evaluation study: how its runs were trained and measured, in words


@dataclass(frozen=True, kw_only=True)
class EvaluationRecord(RunRecord):
    """Every user attribute a test-set run of `search.evaluate` stores (studies `<study>:evaluation`)."""

    source_trial: int | None = None  # the search trial whose configuration this retrains
    train_images: int | None = None
    test_images: int | None = None
    test_loss: float | None = None
    test_acc: float | None = None  # None unless the loss is a classification loss
    # `search.evaluate --from-checkpoint`: the kept weights measured, not retrained; None for a retrained run.
    checkpoint_path: str | None = None
