"""The study definition: a YAML file validated into typed, immutable specs.

Everything a trial needs is derived from one `StudySpec`, which is also stored on the
study so that every worker (on any machine) trains exactly the same problem.
"""
from __future__ import annotations

import math
from functools import reduce
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_REPORTS_PER_TRIAL = 8


# Seeds seed numpy and torch generators: 32-bit unsigned.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class _Spec(BaseModel):
    # Finite floats only: an infinite budget, learning rate or timeout is never what a user means.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DatasetSpec(_Spec):
    """Where the images come from and how much of the training split is held out."""

    # cifar10: CIFAR-10 (downloaded when there is no path); image_folder: your images, one folder per class;
    # synthetic: generated.
    name: Literal["cifar10", "image_folder", "synthetic"]
    # Where the data is: a file, a folder, or a .tar/.tar.gz of one (docs/usage.md, "Data"); --data overrides it.
    path: str | None = None
    # A count of images, or a fraction of the training split when below 1.
    val_size: Annotated[float, Field(gt=0)] = 5000
    # Seeds the class-stratified validation split; part of what makes trials comparable.
    split_seed: Seed = 0
    # Resize every image to this square size; required when a folder's images differ in size.
    image_size: Annotated[int, Field(ge=8, le=4096)] | None = None
    # Only for `synthetic`: a generated, learnable data set for smoke runs and tests.
    num_classes: Annotated[int, Field(ge=2, le=10_000)] = 10
    # Only for `synthetic`: the generated training images (the validation split comes out of them).
    train_examples: Annotated[int, Field(ge=20, le=1_000_000)] = 2000
    # Only for `synthetic`: the generated test images.
    test_examples: Annotated[int, Field(ge=10, le=1_000_000)] = 500

    @model_validator(mode="after")
    def _path_when_needed(self) -> DatasetSpec:
        if self.name == "image_folder" and not self.path:
            raise ValueError("an image_folder data set needs `path` (or --data)")
        return self


# A dotted import path, as LightningCLI's `class_path`: module.submodule.Name.
ClassPath = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$", max_length=300)]


class CodeSpec(_Spec):
    """The user's own code by import path (LightningCLI's convention), called with `init_args`."""

    # module.Name, imported from the working directory, the study file's folder or an installed package.
    class_path: ClassPath
    # Keyword arguments it is called with.
    init_args: dict[str, Any] = {}


# `model.name` is shorthand for these class paths (the project's models/ folder), called with the data's
# `num_classes` and `in_channels` and the study's `model.args`.
BUILTIN_MODELS = {"airbench": "models.airbench.AirbenchNet", "resnet": "models.resnet.CifarResNet", "tiny_cnn": "models.tiny.TinyCNN"}


class ModelSpec(_Spec):
    """A built-in image classifier by `name` (with `args`), or the user's own `class_path`
    (a torch.nn.Module, or a LightningModule whose training_step returns the loss)."""

    # A built-in model: airbench, resnet or tiny_cnn.
    name: str | None = None
    # Keyword arguments of the built-in model: resnet takes depth and width, tiny_cnn width.
    args: dict[str, Any] = {}
    # Your own model instead, by import path (module.Name).
    class_path: ClassPath | None = None
    # Keyword arguments your class_path model is called with.
    init_args: dict[str, Any] = {}

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSpec:
        if (self.name is None) == (self.class_path is None):
            raise ValueError("give either `name` (a built-in model: airbench, resnet, tiny_cnn) or `class_path` (your own module)")
        if self.class_path is not None and self.args:
            raise ValueError("a class_path model takes `init_args`, not `args`")
        return self

    def describe(self) -> str:
        if self.class_path is not None:
            return self.class_path
        return f"{self.name} {self.args or ''}".strip()


class BatchSizeRange(_Spec):
    """Powers of two from `min` to `max`, both included."""

    # The smallest batch size, a power of two.
    min: Annotated[int, Field(ge=1)]
    # The largest batch size, a power of two.
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
    # The lowest value sampled.
    low: float
    # The highest value sampled.
    high: float
    # Sample on a log scale (needs low > 0).
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"range is empty or inverted: low {self.low} must be below high {self.high}")
        if self.log is True and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class MomentumRange(FloatRange):
    """`log: one_minus` samples 1 - momentum on a log scale, from 1 - high to 1 - low (the trial
    keeps `momentum` too): momentum averages over about 1 / (1 - momentum) steps, so 0.9 to 0.99
    changes as much as 0.5 to 0.95, and a uniform draw would rarely try momentum near 1."""

    # true: momentum on a log scale; one_minus: 1 - momentum on a log scale.
    log: bool | Literal["one_minus"] = False


class SearchSpaceSpec(_Spec):
    # The batch sizes sampled: a range of powers of two, or a list of any sizes.
    batch_size: BatchSizeRange | Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    # The learning rate sampled (before lr_parameterization).
    lr: FloatRange
    # The momentum sampled (AdamW's beta1), in [0, 1).
    momentum: MomentumRange
    # decay_lr: constant batch size, decaying learning rate; grow_batch: the sampled batch size
    # grows by the same factors at a fixed learning rate (see ScheduleSpec). Sampled when both are listed.
    schedule: Annotated[list[Literal["decay_lr", "grow_batch"]], Field(min_length=1)] = ["decay_lr"]

    @model_validator(mode="after")
    def _valid_values(self) -> SearchSpaceSpec:
        if self.lr.low <= 0:
            raise ValueError("learning rates must be positive")
        if self.momentum.low < 0 or self.momentum.high >= 1:
            raise ValueError("momentum must lie in [0, 1)")
        if isinstance(self.batch_size, list) and len(set(self.batch_size)) != len(self.batch_size):
            raise ValueError("batch size list has duplicates")
        if len(set(self.schedule)) != len(self.schedule):
            raise ValueError("schedule list has duplicates")
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

    # How the learning rate scales with batch_size / reference_batch_size.
    scaling: Literal["none", "linear", "sqrt"] = "none"
    # The batch size at which the sampled lr is the effective one.
    reference_batch_size: Annotated[int, Field(ge=1)] = 256
    # Multiply the learning rate by (1 - momentum).
    momentum_decoupled: bool = False

    def effective_lr(self, lr: float, batch_size: int, momentum: float) -> float:
        ratio = batch_size / self.reference_batch_size
        scale = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[self.scaling]
        return lr * scale * ((1 - momentum) if self.momentum_decoupled else 1.0)

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
    """SGD (the sampled momentum, Nesterov optional) or AdamW (the sampled momentum is beta1)."""

    # The optimizer.
    name: Literal["sgd", "adamw"] = "sgd"
    # L2 penalty for SGD, decoupled weight decay for AdamW.
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    # SGD only: Nesterov momentum.
    nesterov: bool = True
    # For cross_entropy only.
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # AdamW only: beta1 is the sampled momentum.
    beta2: Annotated[float, Field(gt=0, lt=1)] = 0.999
    # AdamW only: added to the denominator.
    eps: Annotated[float, Field(gt=0)] = 1e-8
    # Weight decay on normalization scales/shifts and biases (the parameters with one dimension or none)
    # changes their effective learning rate differently per batch size; off by default (He et al. 2019).
    decay_norm_and_bias: bool = False


class ScheduleSpec(_Spec):
    """Learning-rate schedule over each trial's own step count.

    Under `grow_batch` the learning rate stays fixed after warm-up and the batch size is
    multiplied by `growth_factor` wherever `decay` would have divided the learning rate by
    growth_factor^k, k = 1..max_growths (Smith et al. 2017, arXiv 1711.00489).
    """

    # The share of a trial's steps with a linearly rising learning rate: the same share of the budget at every batch size.
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.05
    # A floor in steps, capped at a quarter of the trial's steps. 0 by default: a floor of 10 gave a batch size with 16
    # steps 25% of its budget as warm-up against 5% at small batch sizes, and removing it did not hurt (bench.recipe).
    warmup_min_steps: Annotated[int, Field(ge=0)] = 0
    # The warm-up in training examples instead (the same examples, so the same share of the budget, at every batch
    # size; at least one step, at most a quarter of the trial's steps); replaces warmup_fraction and warmup_min_steps.
    warmup_examples: Annotated[int, Field(ge=1)] | None = None
    # The learning rate's decay after warm-up, to zero at the trial's last step (constant: none).
    decay: Literal["linear", "cosine", "constant"] = "linear"
    # grow_batch: the factor the batch size grows by at each growth.
    growth_factor: Annotated[int, Field(ge=2)] = 2
    # grow_batch: at most this many growths.
    max_growths: Annotated[int, Field(ge=1)] = 3


class AccumulationSpec(_Spec):
    """How a batch is split into forward/backward passes whose gradients sum to the batch's.

    memory_cap_mb: the largest micro-batch must fit in this much memory: on the CPU by an
    analytic estimate (weights, gradients, momentum and every layer's output plus its gradient,
    float32), on CUDA by measured peak memory. None: the device's memory (CUDA: OOM probing; the
    CPU: every batch fits). A model with batch norm is split only as `batch_norm.group` allows.
    """

    # The memory the largest micro-batch must fit in, in MB; null: the device's.
    memory_cap_mb: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "normalization_batch" in data:
            raise ValueError("normalization_batch is now batch_norm.group (the same values: full or a number of examples)")
        return data


class BatchNormSpec(_Spec):
    """Batch-norm statistics recomputed before each validation over a fixed training subset (the
    same `recalibrate_examples` images for every trial, in chunks of `recalibrate_batch`), so that
    evaluation does not depend on the batch size through the running averages; 0 turns it off.

    group: the examples each training batch-norm statistic is computed over. `full`: the whole
    batch, so the normalization noise changes with the batch size and batches of models with batch
    norm are never split. An integer N: ghost batch norm (Hoffer et al. 2017) over consecutive groups
    of N examples, the same noise at every batch size above N (Goyal et al. 2017 kept 32 per worker).
    """

    # The examples each training batch-norm statistic is over: the whole batch, or groups of N (ghost batch norm).
    group: Literal["full"] | Annotated[int, Field(ge=2)] = "full"

    # Training images the statistics are recomputed over before each validation; 0: off.
    recalibrate_examples: Annotated[int, Field(ge=0, le=1_000_000)] = 2048
    # Images per forward pass of the recalibration.
    recalibrate_batch: Annotated[int, Field(ge=2, le=65_536)] = 256


# A frontier study's pruner stops a trial only from this share of its budget on (unless pruner.args say otherwise):
# measured within each batch size, rungs before it ranked trials unlike their final losses under a linear decay
# (Spearman below 0.8 for some batch size at 1/8 to 1/2 of the budget; `python -m bench.rung_correlation`,
# 2026-12-07), which favours low learning rates; from 5/8 on every batch size's was 0.87 or more.
FRONTIER_FIRST_RUNG = 0.625

# How a frontier is searched and judged, not what its trials train: changing them keeps a study's trials comparable.
FRONTIER_PLAN_ONLY = ("margin", "share_tuning", "until_converged", "max_trials_per_batch_size")


def without_plan_only(frontier: dict[str, Any]) -> dict[str, Any]:
    """A frontier's part of the comparability key (a stored key from before a field existed compares equal)."""
    return {k: v for k, v in frontier.items() if k not in FRONTIER_PLAN_ONLY}


class FrontierSpec(_Spec):
    """`strategy: frontier`: a learning-rate/momentum search within each listed batch size, then
    each batch size's best configuration re-run with `seeds` seeds paired across batch sizes."""

    # Learning-rate/momentum trials within each batch size.
    trials_per_batch_size: Annotated[int, Field(ge=2, le=10_000)] = 8
    # Seeds each batch size's best configuration is re-run with.
    seeds: Annotated[int, Field(ge=2, le=1_000)] = 3
    # The data-efficiency curve that measures the critical batch size: the smallest batch size's
    # best configuration also trained on shares of the budget, with the learning rate re-tuned at each.
    efficiency_curve: bool = True
    # The shares of the budget the curve trains (the whole budget is the seed re-runs): E/32 ... E/2 by default,
    # so that large batch sizes, up to 32x the examples' cost, still fall inside the curve.
    efficiency_fractions: Annotated[tuple[Annotated[float, Field(gt=0, lt=1)], ...], Field(min_length=1, max_length=12)] = (
        0.03125, 0.0625, 0.125, 0.25, 0.5,
    )
    # The learning-rate sweep at each share: these multiples of the smallest batch size's best full-budget lr, each
    # trained once on a seed of its own; the best is then trained on the paired seeds. A configuration tuned for the
    # whole budget is not tuned for a shorter one, and an untuned curve overstates B_crit. [1]: no sweep.
    reference_lr_factors: Annotated[tuple[Annotated[float, Field(gt=0)], ...], Field(min_length=1, max_length=12)] = (
        0.25, 0.5, 1.0, 2.0, 4.0,
    )
    # The non-inferiority margin, as a fraction of the reference batch size's mean loss: a larger batch size is
    # recommended only when the one-sided 95% upper bound of its paired loss difference lies within it.
    margin: Annotated[float, Field(gt=0, lt=1)] = 0.01
    # The sampler proposing a batch size's next lr and momentum learns from every batch size's trials, aligned to
    # it (lr moved along the slope fitted so far, losses ranked within each batch size); false: from its own only.
    # On by default: 0.67x the trials to come within 2% of each batch size's best (bench.frontier_search, 2026-12-07).
    share_tuning: bool = True
    # Keep adding search trials, one at a time, to each batch size that is still under-tuned after its seed
    # re-runs (its expected best-of-k loss improves by more than their 95% half-width over the last doubling
    # of draws), up to max_trials_per_batch_size; a new best is re-run on the seeds again.
    until_converged: bool = False
    # The cap on search trials per batch size with until_converged (default: 3 x trials_per_batch_size).
    max_trials_per_batch_size: Annotated[int, Field(ge=2, le=10_000)] | None = None

    @field_validator("efficiency_fractions", "reference_lr_factors")
    @classmethod
    def _distinct(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if len(set(values)) < len(values):
            raise ValueError("each value must appear once")
        return tuple(sorted(values))

    @model_validator(mode="after")
    def _cap(self) -> FrontierSpec:
        if self.max_trials_per_batch_size is not None and self.max_trials_per_batch_size < self.trials_per_batch_size:
            raise ValueError(
                f"max_trials_per_batch_size ({self.max_trials_per_batch_size}) is below trials_per_batch_size "
                f"({self.trials_per_batch_size}): the cap must allow at least the trials every batch size gets"
            )
        return self

    def reference_sweep(self) -> tuple[float, ...]:
        """The learning-rate multiples swept at each share of the budget; none when the only one is 1 (no sweep)."""
        return () if self.reference_lr_factors == (1.0,) else self.reference_lr_factors

    def search_cap(self) -> int:
        """Search trials a batch size can get: trials_per_batch_size, or with until_converged its cap."""
        if not self.until_converged:
            return self.trials_per_batch_size
        return self.max_trials_per_batch_size or 3 * self.trials_per_batch_size


class SamplerSpec(_Spec):
    # gp, cmaes and qmc need packages beyond Optuna (search.study.space.build_sampler says which).
    name: Literal["tpe", "random", "gp", "cmaes", "qmc"] = "tpe"
    # The sampler's seed; --seed overrides it.
    seed: Seed = 0
    # tpe, gp and cmaes: random trials before the model takes over.
    n_startup_trials: Annotated[int, Field(ge=0)] = 10


class PrunerSpec(_Spec):
    """Pruning on validation loss; every step-valued argument is in examples seen."""

    # The Optuna pruner; none: every trial runs to the end.
    name: Literal["none", "median", "percentile", "hyperband", "successive_halving"] = "hyperband"
    # Validate (and report) every this many examples; None picks about eight reports per trial.
    report_every_examples: Annotated[int, Field(ge=1)] | None = None
    # With budget_seconds: validate every this many seconds of predicted training time; None: about eight per trial.
    report_every_seconds: Annotated[float, Field(gt=0)] | None = None
    # Keyword arguments of the pruner, step-valued ones in examples (n_warmup_examples, min_resource_examples).
    args: dict[str, Any] = {}


class DiagnosticsSpec(_Spec):
    """Measured on completed trials' final weights (in a frontier study, on its seed re-runs, the
    trials it compares); not part of what makes trials comparable.

    Sharpness is the top Hessian eigenvalue over the first `examples` images of a fixed
    training subset (all of a smaller training set), by Lanczos iteration until its relative
    change and residual are below `tolerance` or `max_iterations` products; the generalization
    gap uses the loss over `loss_examples` images of that subset. On the cifar_critical seed
    re-runs it converged in 5 to 7 Hessian-vector products over 1,024 images, about 45 s a trial
    on two busy CPU cores. Sharpness is dropped for a trial where the next product would pass
    `max_fraction` of its training time.
    """

    # Measure sharpness and the generalization gap.
    enabled: bool = True
    # Training images the sharpness is measured over.
    examples: Annotated[int, Field(ge=1)] = 1024
    # Lanczos stops when the eigenvalue's relative change and residual are below this.
    tolerance: Annotated[float, Field(gt=0, lt=1)] = 1e-3
    # At most this many Hessian-vector products.
    max_iterations: Annotated[int, Field(ge=1, le=1000)] = 50
    # Training images of the generalization gap's training loss (at least `examples`).
    loss_examples: Annotated[int, Field(ge=1)] = 2048
    # Skip sharpness when it would cost more than this fraction of the trial's training time.
    max_fraction: Annotated[float, Field(gt=0)] = 0.5
    # Seeds the fixed training subset and the Lanczos start vector.
    seed: Seed = 0

    @model_validator(mode="after")
    def _subsets_nest(self) -> DiagnosticsSpec:
        if self.examples > self.loss_examples:
            raise ValueError(f"diagnostics.examples ({self.examples}) must not exceed diagnostics.loss_examples ({self.loss_examples})")
        return self


# A study name becomes a path component (results/<name>/...): it starts with a letter, digit or `_`, so `.`,
# `..` and hidden names are not names.
STUDY_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
MAX_STUDY_NAME = 100
BUILT_IN_LOSSES = ("cross_entropy", "mse", "bce_with_logits")


class LoggingSpec(_Spec):
    """A Lightning logger per trial, one run per trial named after the study and trial number.

    `csv` by default: it needs no extra package, costs little, and any tool reads it
    (`tensorboard` and `mlflow` need their packages). Training loss, learning rate, examples seen
    and examples/s are logged every `every_n_steps` optimizer steps, validation metrics at each
    checkpoint. `dir`: where the logs go (default results/<study>/logs; for mlflow the tracking URI).
    """

    # The Lightning logger; none: no logs.
    logger: Literal["none", "csv", "tensorboard", "mlflow"] = "csv"
    # Log training metrics every this many optimizer steps.
    every_n_steps: Annotated[int, Field(ge=1, le=1_000_000)] = 50
    # Where the logs go (mlflow: the tracking URI); null: results/<study>/logs.
    dir: Annotated[str, Field(max_length=4096)] | None = None


class CheckpointSpec(_Spec):
    """The final weights of the best `k` completed trials, kept in an artifact store that every
    worker can reach (default: a folder under results/<study>/); `none` keeps nothing."""

    # Keep the best k trials' final weights, or none.
    keep: Literal["none", "best_k"] = "best_k"
    # How many completed trials' weights are kept.
    k: Annotated[int, Field(ge=1, le=1000)] = 3
    # The artifact store, a folder every worker can reach; null: a folder under results/<study>/.
    dir: Annotated[str, Field(max_length=4096)] | None = None


class StudySpec(_Spec):
    # It names files (results/<name>.sqlite3, report folders) and database rows: short and plain.
    name: Annotated[str, Field(pattern=STUDY_NAME, max_length=MAX_STUDY_NAME)]
    # Free text, for people.
    description: str = ""
    # The images of a built-in source, or the user's own `data` (a LightningDataModule, or a
    # callable returning {"train": Dataset, "val": Dataset[, "test": Dataset]}): exactly one.
    dataset: DatasetSpec | None = None
    # Your own data by class_path, instead of `dataset`.
    data: CodeSpec | None = None
    # The network trained: a built-in by `name`, or your own by `class_path`.
    model: ModelSpec
    # For nn.Module models: a built-in loss name or the user's own class_path (called with
    # (outputs, targets), returning the mean loss). A LightningModule computes its own loss.
    loss: Literal["cross_entropy", "mse", "bce_with_logits"] | CodeSpec = "cross_entropy"
    # The folder class paths resolve from (before the working directory), relative to the study file;
    # default: the study file's own folder. The built-in studies give `..`, the project's folder, for models/.
    # Where the code is, not what it computes: not part of what makes trials comparable.
    code_dir: str | None = None
    # Training examples per trial, the same for every batch size.
    budget_examples: Annotated[int, Field(ge=1, le=10**12)]
    # A fixed training time per trial instead: set, it replaces budget_examples (see search.speed).
    budget_seconds: Annotated[float, Field(gt=0, le=10**7)] | None = None
    # Batch sizes that get fewer optimizer steps than this are rejected: their schedule
    # would be too short to mean anything.
    min_steps: Annotated[int, Field(ge=1)] = 8
    # joint: one search over (batch size, lr, momentum); frontier: per batch size, then paired seeds.
    strategy: Literal["joint", "frontier"] = "joint"
    frontier: FrontierSpec = FrontierSpec()
    search_space: SearchSpaceSpec
    lr_parameterization: LRParameterizationSpec = LRParameterizationSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    batch_norm: BatchNormSpec = BatchNormSpec()
    accumulation: AccumulationSpec = AccumulationSpec()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    diagnostics: DiagnosticsSpec = DiagnosticsSpec()
    # What trials leave behind besides their numbers: not part of what makes trials comparable.
    logging: LoggingSpec = LoggingSpec()
    checkpoints: CheckpointSpec = CheckpointSpec()
    # Finished trials (complete and pruned) to reach, study-wide; a frontier study derives it when left out.
    n_trials: Annotated[int, Field(ge=1, le=1_000_000)] | None = 50
    # No new trial starts after this many seconds.
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    # The database URL; --storage and $SEARCH_STORAGE override it; null: results/<name>.sqlite3.
    storage: str | None = None
    # Workers beat this often; a trial whose worker is silent for 3 beats is failed and retried.
    heartbeat_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    # How long a worker retries a broken database connection (a restart) before giving up.
    storage_retry_seconds: Annotated[float, Field(gt=0, le=86_400)] = 120

    @model_validator(mode="after")
    def _one_data_source(self) -> StudySpec:
        if (self.dataset is None) == (self.data is None):
            raise ValueError("give either `dataset` (built-in images: cifar10, image_folder, synthetic) or `data` (your own, by class_path)")
        if self.data is not None and self.model.class_path is None:
            raise ValueError("the built-in models are image classifiers for `dataset`; with your own `data`, give your own model by class_path")
        return self

    @model_validator(mode="after")
    def _budget_fits(self) -> StudySpec:
        if self.budget_seconds is not None:
            # Steps per batch size come from the device's speed profile: checked at run time.
            every = self.pruner.report_every_seconds
            if every is not None and every > self.budget_seconds:
                raise ValueError(f"pruner.report_every_seconds={every:g} exceeds budget_seconds={self.budget_seconds:g}")
            if "grow_batch" in self.search_space.schedule:
                raise ValueError("budget_seconds turns seconds into steps of a constant batch size: use it without the grow_batch schedule")
        too_large = [b for b in self.search_space.batch_sizes() if self.budget_examples // b < self.min_steps]
        if too_large and self.budget_seconds is None:
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
            if every > self.budget_examples and self.budget_seconds is None:
                raise ValueError(f"pruner.report_every_examples={every} exceeds budget_examples={self.budget_examples}")
        if "grow_batch" in self.search_space.schedule and self.schedule.decay == "constant":
            raise ValueError("the grow_batch schedule grows the batch where the learning rate would decay: set schedule.decay to linear or cosine")
        if self.n_trials is None and self.timeout_seconds is None:
            raise ValueError("set n_trials, timeout_seconds or both, or the study never ends")
        return self

    @model_validator(mode="after")
    def _frontier_trials(self) -> StudySpec:
        # A frontier study's count follows from its plan unless the file sets it (a smaller one stops early).
        if self.strategy == "frontier" and "n_trials" not in self.model_fields_set:
            object.__setattr__(self, "n_trials", self.frontier_trials())
        return self

    def frontier_trials(self, added: bool = True) -> int:
        """A frontier study's trials: batch sizes x (trials per batch size + seeds), and the efficiency curve's; with
        until_converged and `added`, at most (every batch size to its cap, each added trial a new best re-run on the seeds)."""
        frontier = self.frontier
        curve = len(frontier.efficiency_fractions) * (len(frontier.reference_sweep()) + frontier.seeds) if self.has_efficiency_curve() else 0
        cap = frontier.search_cap() if added else frontier.trials_per_batch_size
        bests = 1 + cap - frontier.trials_per_batch_size
        return len(self.search_space.batch_sizes()) * (cap + bests * frontier.seeds) + curve

    def has_efficiency_curve(self) -> bool:
        """A frontier study's efficiency curve is in examples: a time budget (budget_seconds) has none."""
        return self.strategy == "frontier" and self.frontier.efficiency_curve and self.budget_seconds is None

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

    def short_of_budget(self) -> list[tuple[int, int]]:
        """(batch size, examples it trains) for the batch sizes that do not divide the example budget."""
        if self.budget_seconds is not None:
            return []
        return [(b, self.steps(b) * b) for b in self.search_space.batch_sizes() if self.budget_examples % b]

    def report_every_ms(self) -> int:
        """With budget_seconds: milliseconds of predicted training time between validations."""
        assert self.budget_seconds is not None
        every = self.pruner.report_every_seconds or self.budget_seconds / DEFAULT_REPORTS_PER_TRIAL
        return max(1, round(1000 * every))

    def first_pruning_step(self) -> int:
        """The first step a pruner may stop a trial at by default: the first report; in a frontier study, the first
        report at or after `FRONTIER_FIRST_RUNG` of the budget (earlier rungs ranked trials unlike their final losses)."""
        first, last = self.pruning_resources()
        if self.strategy != "frontier":
            return first
        return min(last, math.ceil(FRONTIER_FIRST_RUNG * last / first) * first)

    def pruning_resources(self) -> tuple[int, int]:
        """The first report step and the budget, in the unit trials report in (examples, or ms with budget_seconds)."""
        if self.budget_seconds is None:
            return self.report_every(), self.budget_examples
        return self.report_every_ms(), round(1000 * self.budget_seconds)

    def comparability_key(self) -> dict[str, Any]:
        """The fields that must match for trials to be comparable within one study."""
        fields = (
            "dataset", "data", "model", "loss", "budget_examples", "search_space", "lr_parameterization", "optimizer", "schedule",
            "batch_norm", "strategy", "frontier",
        )
        # The memory cap only changes how a batch is split, never the gradient: not part of the key.
        # batch_norm.group is under its first name, normalization_batch, as in the keys stored before it moved.
        exclude: dict[str, Any] = {"batch_norm": {"group"}, **({"dataset": {"path"}} if self.dataset else {})}
        key = self.model_dump(include=set(fields), exclude=exclude, mode="json")
        if key.get("frontier"):
            key["frontier"] = without_plan_only(key["frontier"])
        if key["schedule"].get("warmup_examples") is None:
            del key["schedule"]["warmup_examples"]  # unset: the keys stored before it existed compare equal
        key["report_every_examples"] = self.report_every()
        key["normalization_batch"] = self.batch_norm.group
        # None without a time budget, as in the keys stored before time budgets: those studies still resume.
        key["budget_seconds"] = self.budget_seconds
        key["report_every_ms"] = None if self.budget_seconds is None else self.report_every_ms()
        return key






