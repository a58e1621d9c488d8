"""The study definition: a YAML file validated into typed, immutable specs.

Everything a trial needs is derived from one `StudySpec`, which is also stored on the
study so that every worker (on any machine) trains exactly the same problem.
"""
from __future__ import annotations

import math
from functools import reduce
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from search.errors import UserError

STUDIES_DIR = Path(__file__).resolve().parents[1] / "studies"
DEFAULT_REPORTS_PER_TRIAL = 8


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Spec):
    """Where the images come from and how much of the training split is held out."""

    name: Literal["cifar10", "image_folder", "synthetic"]
    path: str | None = None
    # A count of images, or a fraction of the training split when below 1.
    val_size: Annotated[float, Field(gt=0)] = 5000
    # Seeds the class-stratified validation split; part of what makes trials comparable.
    split_seed: int = 0
    # Resize every image to this square size; required when a folder's images differ in size.
    image_size: Annotated[int, Field(ge=8)] | None = None
    # Only for `synthetic`: a generated, learnable data set for smoke runs and tests.
    num_classes: Annotated[int, Field(ge=2)] = 10
    train_examples: Annotated[int, Field(ge=20)] = 2000
    test_examples: Annotated[int, Field(ge=10)] = 500

    @model_validator(mode="after")
    def _path_when_needed(self) -> DatasetSpec:
        if self.name == "image_folder" and not self.path:
            raise ValueError("an image_folder data set needs `path` (or --data)")
        return self


class ModelSpec(_Spec):
    name: str
    args: dict[str, Any] = {}


class BatchSizeRange(_Spec):
    """Powers of two from `min` to `max`, both included."""

    min: Annotated[int, Field(ge=1)]
    max: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _powers_of_two(self) -> BatchSizeRange:
        for bound in (self.min, self.max):
            if bound & (bound - 1):
                raise ValueError(f"batch size bound {bound} is not a power of two (use a list for other sizes)")
        if self.min > self.max:
            raise ValueError(f"batch size range is inverted: min {self.min} > max {self.max}")
        return self

    def values(self) -> list[int]:
        return [2**k for k in range(self.min.bit_length() - 1, self.max.bit_length())]


class FloatRange(_Spec):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"range is empty or inverted: low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class SearchSpaceSpec(_Spec):
    batch_size: BatchSizeRange | Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    lr: FloatRange
    momentum: FloatRange

    @model_validator(mode="after")
    def _valid_values(self) -> SearchSpaceSpec:
        if self.lr.low <= 0:
            raise ValueError("learning rates must be positive")
        if self.momentum.low < 0 or self.momentum.high >= 1:
            raise ValueError("momentum must lie in [0, 1)")
        if isinstance(self.batch_size, list) and len(set(self.batch_size)) != len(self.batch_size):
            raise ValueError("batch size list has duplicates")
        return self

    def batch_sizes(self) -> list[int]:
        if isinstance(self.batch_size, list):
            return sorted(self.batch_size)
        return self.batch_size.values()


class LRParameterizationSpec(_Spec):
    """How the sampled `lr` maps to the learning rate handed to the optimizer.

    effective_lr = lr * scale(batch_size / reference_batch_size) * ((1 - momentum) if momentum_decoupled)
    where scale is 1 (none), the ratio (linear) or its square root (sqrt). Decoupling keeps
    the optimum of `lr` in place when batch size or momentum move, which helps the sampler.
    """

    scaling: Literal["none", "linear", "sqrt"] = "none"
    reference_batch_size: Annotated[int, Field(ge=1)] = 256
    momentum_decoupled: bool = False

    def describe(self) -> str:
        terms = ["lr"]
        if self.scaling == "linear":
            terms.append(f"(B / {self.reference_batch_size})")
        elif self.scaling == "sqrt":
            terms.append(f"sqrt(B / {self.reference_batch_size})")
        if self.momentum_decoupled:
            terms.append("(1 - momentum)")
        return "effective_lr = " + " * ".join(terms)


class OptimizerSpec(_Spec):
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    nesterov: bool = True
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0


class ScheduleSpec(_Spec):
    """Learning-rate schedule over each trial's own step count."""

    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.05
    decay: Literal["linear", "cosine", "constant"] = "linear"


class SamplerSpec(_Spec):
    name: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    n_startup_trials: Annotated[int, Field(ge=0)] = 10


class PrunerSpec(_Spec):
    """Pruning on validation loss; every step-valued argument is in examples seen."""

    name: Literal["none", "median", "percentile", "hyperband", "successive_halving"] = "hyperband"
    # Validate (and report) every this many examples; None picks about eight reports per trial.
    report_every_examples: Annotated[int, Field(ge=1)] | None = None
    args: dict[str, Any] = {}


class StudySpec(_Spec):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    dataset: DatasetSpec
    model: ModelSpec
    budget_examples: Annotated[int, Field(ge=1)]
    # Batch sizes that get fewer optimizer steps than this are rejected: their schedule
    # would be too short to mean anything.
    min_steps: Annotated[int, Field(ge=1)] = 8
    search_space: SearchSpaceSpec
    lr_parameterization: LRParameterizationSpec = LRParameterizationSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    n_trials: Annotated[int, Field(ge=1)] | None = 50
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    storage: str | None = None
    # Workers beat this often; a trial whose worker is silent for 3 beats is failed and retried.
    heartbeat_seconds: Annotated[int, Field(ge=1)] = 30
    # How long a worker retries a broken database connection (a restart) before giving up.
    storage_retry_seconds: Annotated[float, Field(gt=0)] = 120

    @model_validator(mode="after")
    def _budget_fits(self) -> StudySpec:
        too_large = [b for b in self.search_space.batch_sizes() if self.budget_examples // b < self.min_steps]
        if too_large:
            largest = max(self.search_space.batch_sizes())
            raise ValueError(
                f"budget_examples {self.budget_examples} gives fewer than min_steps={self.min_steps} steps "
                f"to batch sizes {too_large}; raise the budget to at least {largest * self.min_steps}, "
                f"lower the largest batch size, or lower min_steps"
            )
        every = self.pruner.report_every_examples
        if every is not None:
            uneven = [b for b in self.search_space.batch_sizes() if every % b]
            if uneven:
                raise ValueError(
                    f"pruner.report_every_examples={every} is not a multiple of batch sizes {uneven}: "
                    f"validation must fall at the same examples seen for every batch size; "
                    f"use a multiple of {self.checkpoint_granularity()} or leave it out"
                )
            if every > self.budget_examples:
                raise ValueError(f"pruner.report_every_examples={every} exceeds budget_examples={self.budget_examples}")
        if self.n_trials is None and self.timeout_seconds is None:
            raise ValueError("set n_trials, timeout_seconds or both, or the study never ends")
        return self

    def checkpoint_granularity(self) -> int:
        """The smallest number of examples that every batch size reaches in whole steps."""
        return reduce(math.lcm, self.search_space.batch_sizes())

    def report_every(self) -> int:
        """Examples between validations: the same checkpoints for every batch size."""
        if self.pruner.report_every_examples is not None:
            return self.pruner.report_every_examples
        unit = self.checkpoint_granularity()
        return max(unit, round(self.budget_examples / DEFAULT_REPORTS_PER_TRIAL / unit) * unit)

    def steps(self, batch_size: int) -> int:
        return self.budget_examples // batch_size

    def comparability_key(self) -> dict[str, Any]:
        """The fields that must match for trials to be comparable within one study."""
        fields = ("dataset", "model", "budget_examples", "search_space", "lr_parameterization", "optimizer", "schedule")
        key = self.model_dump(include=set(fields), exclude={"dataset": {"path"}}, mode="json")
        key["report_every_examples"] = self.report_every()
        return key


def find_study_file(study: str) -> Path:
    """`--study` is a file path or the name of a file in `studies/`."""
    candidates = [Path(study), Path("studies") / f"{study}.yaml", STUDIES_DIR / f"{study}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))
    raise UserError(
        f"No study file for '{study}'. Pass a path to a YAML study file or one of the shipped "
        f"studies: {', '.join(known) or '(none found)'}."
    )


def load_spec(study: str, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Read a study file, apply command-line overrides (dotted keys) and validate."""
    path = find_study_file(study)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"Study file {path} is not valid YAML: {error}. Fix the syntax and run again.") from None
    if not isinstance(raw, dict):
        raise UserError(f"Study file {path} must hold a mapping of settings (dataset, model, budget_examples, ...).")
    raw.setdefault("name", path.stem)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UserError(f"Study file {path}: `{key}` must be a mapping to override `{dotted}`.")
        node[leaf] = value
    return validate_spec(raw, source=str(path))


def validate_spec(raw: dict[str, Any], source: str = "study") -> StudySpec:
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'study'}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        )
        raise UserError(f"Study file {source} is invalid: {problems}. Fix these fields and run again.") from None
