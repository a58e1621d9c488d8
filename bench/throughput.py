"""Trial throughput: the service's Lightning trial against a plain PyTorch loop, side by side.

    python -m bench.throughput [--data PATH] [--repeats N] [--long]

For the models of `cifar_bs` and `smoke` and batch sizes 32, 128 and 512, each repeat runs
the service's `train()` (Lightning module, the reporter callback talking to a real Optuna
trial, the on-device data path) and a minimal hand-written loop over the same model, data,
augmentation, optimizer and schedule, in alternating order. Steady-state examples/s is timed
after warm-up steps; the median of the per-repeat ratios is reported, because single runs
on a shared machine vary by several percent.

It also measures training FLOPs per example (PyTorch's FlopCounterMode, forward + backward),
the machine's fp32 matrix-multiply peak in the same run, and the share of a real trial's
wall time spent outside training and validation steps (set-up, reporting, storage, fetching
batches), projected to the study's default budget (`--long` runs that budget for real).

Last, the cost of the training curves: the same `train()` with the default csv logger against
`logging.logger: none` (same model, data and batch size, interleaved, median ratio).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import optuna
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.report import Table, targets_line, write_result
from search.config.load import load_spec
from search.config.spec import LoggingSpec, StudySpec
from search.data.source import TrialData, load_data
from search.record import TrialRecord
from search.store.storage import create_or_resume, open_storage
from search.study.objective import Objective
from search.study.pruners import build_pruner
from search.study.reporting import ExamplesSeenReporter
from search.study.space import build_sampler
from search.train.curves import TrainingCurves
from search.train.model import build_model, training_step
from search.train.plan import TrainingPlan, lr_factor
from search.train.run import train
from search.train.step import TrainingStep

STUDIES = ("cifar_bs", "smoke")
BATCH_SIZES = (32, 128, 512)
WARMUP_STEPS = 3
SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


class StepTimer(pl.Callback):
    """Seconds inside training steps, between them (fetching the next batch) and in validation."""

    def __init__(self, warmup_steps: int = 0) -> None:
        self.warmup_steps = warmup_steps
        self.in_steps = self.between_steps = self.validation = 0.0
        self.window_start = self.window_end = 0.0
        self._step_start = self._validation_start = 0.0
        self._last_end: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self.between_steps += now - self._last_end
        self._step_start = now

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        now = time.perf_counter()
        self.in_steps += now - self._step_start
        self._last_end = now
        if trainer.global_step == self.warmup_steps:
            self.window_start = now
        self.window_end = now

    def on_validation_start(self, trainer: pl.Trainer, *args: object) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self.between_steps += now - self._last_end
        self._last_end = None
        self._validation_start = now

    def on_validation_end(self, trainer: pl.Trainer, *args: object) -> None:
        self._last_end = time.perf_counter()
        self.validation += self._last_end - self._validation_start


@dataclass
class Problem:
    """One study's model and on-device data, as a worker holds them."""

    spec: StudySpec
    data: TrialData

    def model(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build_model(self.spec, self.data)

    def step(self, seed: int) -> TrainingStep:
        """The service's training step (what trials, the profile and the probe run) on a fresh model."""
        return training_step(self.spec, self.model(seed), self.data.device)

    def plan(self, batch_size: int, steps: int) -> TrainingPlan:
        return TrainingPlan(batch_size, steps, effective_lr=0.02, momentum=0.9, report_every_examples=steps * batch_size, seed=0)


def load_problem(study: str, data_path: Path | None) -> Problem:
    overrides = {}
    if study == "cifar_bs":
        path = data_path or SHARED_CIFAR
        if not path.exists():
            raise SystemExit(f"CIFAR-10 not found at {path}; pass --data PATH (see README, 'Data').")
        overrides["dataset.path"] = str(path)
    spec = load_spec(study, overrides)
    return Problem(spec, load_data(spec, torch.device("cpu")))


def lightning_examples_per_second(problem: Problem, batch_size: int, steps: int) -> float:
    plan = problem.plan(batch_size, steps)
    trial = optuna.create_study().ask()  # in memory: this part times the training loop, not storage
    timer = StepTimer(WARMUP_STEPS)
    train(problem.step(0), problem.data, plan, problem.spec.optimizer, problem.spec.schedule, [ExamplesSeenReporter(trial), timer])
    return (steps - WARMUP_STEPS) * batch_size / (timer.window_end - timer.window_start)


class TimedCurves(TrainingCurves):
    """The trial's TrainingCurves, adding up the seconds spent in its hooks and in the logger's calls from Lightning
    (hyperparameters, save, finalize): the logging's own time inside a real trial, without differencing two noisy runs."""

    def __init__(self, curves: TrainingCurves) -> None:
        super().__init__(curves.logger, curves.every_n_steps, curves.hyperparameters)
        self.seconds = 0.0
        self._inside = False
        for name in ("log_hyperparams", "log_metrics", "log_graph", "save", "finalize"):
            setattr(self.logger, name, self._timed(getattr(self.logger, name)))

    def _timed(self, method: Callable[..., None]) -> Callable[..., None]:
        def timed(*args: object, **kwargs: object) -> None:
            if self._inside:
                return method(*args, **kwargs)
            self._inside, started = True, time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self._inside = False

        return timed

    def on_train_start(self, *args: Any) -> None:
        self._timed(super().on_train_start)(*args)

    def on_train_batch_end(self, *args: Any) -> None:
        self._timed(super().on_train_batch_end)(*args)

    def on_train_end(self, *args: Any) -> None:
        self._timed(super().on_train_end)(*args)

    def on_validation_start(self, *args: Any) -> None:
        self._timed(super().on_validation_start)(*args)

    def on_validation_end(self, *args: Any) -> None:
        self._timed(super().on_validation_end)(*args)


@dataclass
class LoggedRun:
    steady: float  # examples/s after warm-up
    whole: float  # the whole train() call's seconds
    logging: float  # seconds inside the logging code (0 without a logger)


def logged_run(problem: Problem, batch_size: int, steps: int, logging: LoggingSpec, run: str) -> LoggedRun:
    """The service's `train()` with the study's logger set as `logging`, as run `run` of its experiment."""
    plan = problem.plan(batch_size, steps)
    trial = optuna.create_study().ask()
    timer = StepTimer(WARMUP_STEPS)
    step = problem.step(0)
    started = time.perf_counter()
    curves = TrainingCurves.create(logging, "logging_cost", run, Path(logging.dir or "."), {"batch_size": batch_size})
    timed = TimedCurves(curves) if curves else None
    created = time.perf_counter() - started
    train(step, problem.data, plan, problem.spec.optimizer, problem.spec.schedule, [ExamplesSeenReporter(trial), timer], timed)
    whole = time.perf_counter() - started
    steady = (steps - WARMUP_STEPS) * batch_size / (timer.window_end - timer.window_start)
    return LoggedRun(steady, whole, created + timed.seconds if timed else 0.0)


def logging_cost(problem: Problem, batch_size: int, steps: int, repeats: int) -> tuple[list[str], float]:
    """A table row and the median cost: the logging's own time as a share of the trial's (csv runs), and, as a
    cross-check, examples/s with `logger: none` against csv, interleaved."""
    none, csv, ratios, shares = [], [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            order = ("none", "csv") if repeat % 2 == 0 else ("csv", "none")
            runs = {kind: logged_run(problem, batch_size, steps, LoggingSpec(logger=kind, dir=folder), f"run_{repeat}") for kind in order}
            none.append(runs["none"].steady)
            csv.append(runs["csv"].steady)
            ratios.append(runs["csv"].steady / runs["none"].steady)
            shares.append(runs["csv"].logging / runs["csv"].whole)
    every, share = LoggingSpec().every_n_steps, statistics.median(shares)
    return [
        f"{problem.spec.name} ({problem.spec.model.describe()})", str(batch_size), f"{steps} ({steps // every} points)",
        f"**{share:.2%}**", f"{min(shares):.2%}–{max(shares):.2%}", f"{statistics.median(none):,.0f}", f"{statistics.median(csv):,.0f}",
        f"{1 - statistics.median(ratios):+.1%} ({1 - max(ratios):+.0%} to {1 - min(ratios):+.0%})",
    ], share


def plain_examples_per_second(problem: Problem, batch_size: int, steps: int) -> float:
    """The loop a user would write by hand: same model, batches, augmentation, SGD and schedule, and the trials' weight
    decay on the weights only (biases and normalization parameters, one dimension or none, get none)."""
    spec, plan = problem.spec, problem.plan(batch_size, steps)
    model = problem.model(0).train()
    weights = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": weights, "weight_decay": spec.optimizer.weight_decay}, {"params": others, "weight_decay": 0.0}],
        lr=plan.effective_lr, momentum=plan.momentum, nesterov=spec.optimizer.nesterov,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, spec.schedule))
    batches = iter(problem.data.train_batches(batch_size, plan.seed))
    started = 0.0
    for step in range(steps):
        if step == WARMUP_STEPS:
            started = time.perf_counter()
        images, labels = next(batches)
        loss = F.cross_entropy(model(images), labels, label_smoothing=spec.optimizer.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return (steps - WARMUP_STEPS) * batch_size / (time.perf_counter() - started)


def training_flops_per_example(problem: Problem, batch_size: int = 32) -> float:
    step = problem.step(0)
    step.model.train()
    batch = next(iter(problem.data.train_batches(batch_size, 0)))
    with FlopCounterMode(display=False) as counter:
        step.accumulate(batch, None, batch_size)
    return counter.get_total_flops() / batch_size


def matmul_peak_flops(size: int = 1024, repeats: int = 20) -> float:
    """fp32 matrix-multiply FLOP/s of this machine, best of several timings."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def steps_for(examples_per_second_guess: float, batch_size: int, seconds: float) -> int:
    return WARMUP_STEPS + max(4, round(seconds * examples_per_second_guess / batch_size))


@dataclass
class Overhead:
    budget_examples: int
    batch_size: int
    wall: float
    in_steps: float
    between_steps: float
    validation: float
    validations: int
    diagnostics: float  # sharpness and gap after training: measurements the user asked for, not overhead

    @property
    def fixed(self) -> float:
        """Per-trial cost outside the training loop: sampling, model and Trainer set-up, storage writes."""
        return self.wall - self.in_steps - self.between_steps - self.validation - self.diagnostics

    @property
    def outside_fraction(self) -> float:
        return (self.fixed + self.between_steps) / self.wall

    def projected(self, budget_examples: int, validations: int) -> float:
        """The outside share at another budget: fixed costs stay, per-step and per-validation costs scale."""
        scale = budget_examples / self.budget_examples
        outside = self.fixed + self.between_steps * scale
        inside = self.in_steps * scale + self.validation / self.validations * validations + self.diagnostics
        return outside / (outside + inside)


def measure_overhead(problem: Problem, batch_size: int, budget_examples: int) -> Overhead:
    """One real trial through the service's Objective on a real SQLite study, timed from outside."""
    with tempfile.TemporaryDirectory() as folder:
        # The default csv logger, as trials have it, writing into the temporary folder.
        spec = problem.spec.model_copy(update={"budget_examples": budget_examples, "name": "overhead", "logging": LoggingSpec(dir=folder)})
        storage = open_storage(f"sqlite:///{folder}/overhead.sqlite3", spec.heartbeat_seconds, spec.storage_retry_seconds)
        study = create_or_resume(storage, spec, build_sampler(spec), build_pruner(spec), data_fingerprint=problem.data.fingerprint)
        study.enqueue_trial({"batch_size": batch_size, "lr": spec.search_space.lr.low, "momentum": spec.search_space.momentum.low})
        timer = StepTimer()
        objective = Objective(spec, problem.data, "cpu", callbacks=[timer])
        started = time.perf_counter()
        study.optimize(objective, n_trials=1)
        wall = time.perf_counter() - started
        trial = study.trials[0]
        validations = len(trial.intermediate_values) + (budget_examples // batch_size * batch_size % spec.report_every() != 0)
    return Overhead(
        budget_examples, batch_size, wall, timer.in_steps, timer.between_steps, timer.validation, validations,
        TrialRecord.of(trial).diagnostics_seconds or 0.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help=f"CIFAR-10 for cifar_bs (default {SHARED_CIFAR})")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per (model, batch size)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per run")
    parser.add_argument("--long", action="store_true", help="more repeats, and a real trial at cifar_bs's default budget")
    parser.add_argument("--out", type=Path, default=Path("bench/results/throughput.md"))
    args = parser.parse_args(argv)
    repeats, seconds = (args.repeats * 2, args.seconds * 2) if args.long else (args.repeats, args.seconds)
    peak = matmul_peak_flops()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)

    rows, ratios_at = [], {}
    for study in STUDIES:
        problem = load_problem(study, args.data)
        flops = training_flops_per_example(problem)
        for batch_size in BATCH_SIZES:
            guess = plain_examples_per_second(problem, batch_size, WARMUP_STEPS + 4)
            steps = steps_for(guess, batch_size, seconds)
            lightning, plain, ratios = [], [], []
            for repeat in range(repeats):
                # Alternate which loop goes first, so drift in machine load hits both alike.
                first, second = (lightning_examples_per_second, plain_examples_per_second)[:: 1 if repeat % 2 == 0 else -1]
                a, b = first(problem, batch_size, steps), second(problem, batch_size, steps)
                ours, theirs = (a, b) if first is lightning_examples_per_second else (b, a)
                lightning.append(ours)
                plain.append(theirs)
                ratios.append(ours / theirs)
            ratio = statistics.median(ratios)
            ratios_at[(study, batch_size)] = ratio
            ex_s = statistics.median(lightning)
            rows.append([
                f"{study} ({problem.spec.model.describe()})", str(batch_size), f"{ex_s:,.0f}", f"{statistics.median(plain):,.0f}",
                f"{ratio:.3f}", f"{min(ratios):.2f}–{max(ratios):.2f}", f"{flops / 1e6:,.1f}", f"{ex_s * flops / peak:.1%}",
            ])
            print(" | ".join(rows[-1]), flush=True)

    cifar = load_problem("cifar_bs", args.data)
    default_budget = cifar.spec.budget_examples
    overhead_budget = default_budget if args.long else max(cifar.spec.report_every(), default_budget // 16)
    overhead = measure_overhead(cifar, 512, overhead_budget)
    validations_at_default = -(-default_budget // 512 * 512 // cifar.spec.report_every())
    projected = overhead.projected(default_budget, validations_at_default)
    print(f"overhead: {overhead}", flush=True)

    # The training curves' cost: the worst case is the most steps per second (smoke's tiny model, small batches).
    logging_rows, logging_costs = [], []
    for study, batch_size in (("smoke", 32), ("smoke", 512), ("cifar_bs", 32)):
        problem = load_problem(study, args.data)
        guess = plain_examples_per_second(problem, batch_size, WARMUP_STEPS + 4)
        steps = max(steps_for(guess, batch_size, seconds), WARMUP_STEPS + 2 * LoggingSpec().every_n_steps)  # 2 points at least
        row, cost = logging_cost(problem, batch_size, steps, max(repeats, 5))
        logging_rows.append(row)
        logging_costs.append(cost)
        print(" | ".join(row), flush=True)

    table = Table(["study (model)", "B", "service ex/s", "plain ex/s", "ratio (median)", "ratio range", "MFLOP/example", "of fp32 peak"], rows)
    targets = [
        ("ratio >= 0.95 at B >= 128", min(r for (s, b), r in ratios_at.items() if b >= 128) >= 0.95),
        ("ratio >= 0.85 at B = 32", min(r for (s, b), r in ratios_at.items() if b == 32) >= 0.85),
        ("outside steps < 3% of a default-budget trial", projected < 0.03),
        ("csv training curves < 1% of a trial's time", max(logging_costs) < 0.01),
    ]
    body = [
        f"fp32 matrix-multiply peak measured in this run: **{peak / 1e9:.1f} GFLOP/s** (1024x1024 torch.mm, best of 20).",
        f"{repeats} interleaved repeats per row, {seconds:g} s timed per run after {WARMUP_STEPS} warm-up steps; "
        "FLOPs are forward + backward per training example (FlopCounterMode).",
        "",
        table.markdown(),
        "",
        f"**Time outside training and validation steps** (a real `cifar_bs` trial through `Objective` on SQLite, B=512, "
        f"{overhead.budget_examples:,} examples): wall {overhead.wall:.1f} s = steps {overhead.in_steps:.1f} s + "
        f"validation {overhead.validation:.1f} s ({overhead.validations}x) + sharpness and gap {overhead.diagnostics:.1f} s + "
        f"fetching batches {overhead.between_steps:.2f} s + fixed per-trial cost {overhead.fixed:.2f} s (sampling, model and "
        "Trainer set-up, storage). Outside share (fetching batches and the fixed cost): "
        f"{overhead.outside_fraction:.2%} of this trial; "
        + (f"at the default budget ({default_budget:,} examples) measured directly." if args.long else
           f"projected to the default budget ({default_budget:,} examples, {validations_at_default} validations): **{projected:.2%}**."),
        "",
        f"**The training curves' cost** (`logging.logger: csv`, the default, a point every {LoggingSpec().every_n_steps} steps): "
        f"the service's `train()` with the csv logger and with `none`, alternately, {max(repeats, 5)} interleaved repeats, "
        f"{seconds:g} s per run (at least 2 points). Cost = the time inside the logging code (the logger's creation, the "
        "callback's hooks, Lightning's calls to the logger; the training step itself is unchanged) over the whole `train()` "
        "call, median and range of the csv runs. Comparing examples/s with and without the logger "
        "(last column: 1 - csv/none, median and range) cannot resolve 1% on a shared machine; it is there as a cross-check.",
        "",
        Table(["study (model)", "B", "steps", "cost (median)", "cost range", "ex/s none", "ex/s csv", "1 - csv/none"], logging_rows).markdown(),
        "",
        targets_line(targets),
    ]
    write_result(args.out, "Trial throughput (`python -m bench.throughput`)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
