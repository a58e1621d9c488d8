"""Search efficiency: trials needed to come within 2% of the best loss, per sampler and parameterization.

    python -m bench.search             # 5 samplers x 6 parameterizations, 12 seeds x 60 trials (8 min on 2 shared CPU cores)
    python -m bench.search --long      # 30 seeds x 100 trials, and three more TPE parameterizations (hours: GP)
    python -m bench.search --collect   # re-measure the real trials the surrogate is fitted to (80 trainings, 6-30 min)

Training thousands of trials is out of reach on a CPU, so the samplers search a surrogate
fitted to real trials: `--collect` runs a random-search study through the service (the same
CIFAR-10 task as bench/pruning.py, pruning off) and stores every trial's batch size,
effective learning rate, momentum and final validation loss in bench/results/search_trials.json.
The surrogate is a Gaussian-process posterior mean over (log2 B, log10 effective lr,
momentum), its length scales and noise chosen by leave-one-out error. Each method then runs a
real Optuna study whose trials go through `space.sample` (the study's own parameterization and
`effective_lr`), and are scored by the surrogate plus Gaussian noise of the size the fit
estimated. The bar is the surrogate's own minimum over the searched space, so every method is
held to the same one whichever others ran, and a search stops once it is reached: the GP
sampler takes about a second per trial, the others milliseconds. Writes bench/results/search.md.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial

from bench import publish
from bench.pruning import (
    BASE_STUDY,
    DEFAULT_DATA,
    RESULTS,
    run_study,
    task_overrides,
    verdict,
)
from search.analysis.pruning import finished
from search.config.load import load_spec
from search.config.spec import StudySpec
from search.data.images import load_dataset
from search.record import Hyperparams, TrialRecord
from search.study import space
from search.study.space import build_sampler

TRIALS_FILE = RESULTS / "search_trials.json"
# Random search in two phases over effective learning rates (raw lr). The wide phase reaches
# every rate the compared parameterizations sample (beyond it the surrogate holds its boundary
# value); the second puts more trials where the wide phase found every loss below 2.1 at
# 8,192 examples, so that the surrogate is resolved where the searches have to choose.
COLLECT_PHASES = (
    ("wide", 48, {"low": 3e-4, "high": 5.0, "log": True}),
    ("focused", 32, {"low": 0.03, "high": 2.0, "log": True}),
)
WITHIN = 0.02  # "within 2% of the best loss found by any method"
TARGET_TRIALS_RATIO = 0.5
# Ranges are matched at the reference point (B = 256, momentum 0.9): there every
# parameterization spans the same effective learning rates as the main study's lr range.
REFERENCE_MOMENTUM = 0.9


@dataclass(frozen=True)
class Method:
    sampler: str  # sampler.name
    scaling: str  # lr_parameterization.scaling
    decoupled: bool = False  # lr_parameterization.momentum_decoupled
    one_minus: bool = False  # search_space.momentum.log: one_minus (sample log(1 - momentum))

    @property
    def name(self) -> str:
        lr = {"none": "raw lr", "sqrt": "sqrt(B)", "linear": "linear(B)"}[self.scaling]
        return f"{SAMPLER_NAMES[self.sampler]} {lr}" + (" + decoupled" if self.decoupled else "") + (" + log(1-m)" if self.one_minus else "")


SAMPLER_NAMES = {"random": "random", "tpe": "TPE", "gp": "GP", "cmaes": "CMA-ES", "qmc": "QMC"}
BASELINE = Method("tpe", "none")  # the target's yardstick: TPE on the raw learning rate
METHODS = tuple(
    Method(sampler, scaling, one_minus=one_minus)
    for sampler in SAMPLER_NAMES for scaling in ("none", "sqrt", "linear") for one_minus in (False, True)
)
LONG_METHODS = (Method("tpe", "none", decoupled=True), Method("tpe", "sqrt", decoupled=True), Method("tpe", "linear", decoupled=True))


# --- collecting real trials -------------------------------------------------------------

def collect_phase(args: argparse.Namespace, phase: int) -> tuple[list[dict[str, Any]], float]:
    """One random-search study over (B, raw lr, momentum) on the real task, pruning off."""
    name, n_trials, lr = COLLECT_PHASES[phase]
    overrides = task_overrides(args.data, args.budget, n_trials, seed=phase)
    overrides.update({
        "name": f"search-collect-{name}", "sampler.name": "random", "pruner.name": "none", "pruner.args": {},
        "lr_parameterization": {"scaling": "none", "momentum_decoupled": False}, "search_space.lr": lr,
    })
    spec = load_spec(BASE_STUDY, overrides)
    trials, seconds = run_study(spec, load_dataset(spec.dataset))
    rows = [_row(name, t, TrialRecord.of(t)) for t in finished(trials)]
    return rows, seconds


def _row(phase: str, trial: FrozenTrial, record: TrialRecord) -> dict[str, Any]:
    """What search_trials.json keeps of a trial (the surrogate reads batch_size, effective_lr, momentum, final_val_loss)."""
    return {
        "phase": phase, "number": trial.number, "state": trial.state.name, "batch_size": Hyperparams.of(trial).batch_size,
        "lr": Hyperparams.of(trial).lr, "effective_lr": record.effective_lr, "momentum": Hyperparams.of(trial).momentum,
        "final_val_loss": record.final_val_loss, "final_val_acc": record.final_val_acc,
        "reason": record.reason or "", "wall_seconds": record.wall_seconds,
        "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},  # examples seen -> val loss
    }


def collect(args: argparse.Namespace) -> None:
    spec = load_spec(BASE_STUDY, task_overrides(args.data, args.budget, 1, seed=0))
    rows, seconds = [], 0.0
    for phase in range(len(COLLECT_PHASES)):
        phase_rows, phase_seconds = collect_phase(args, phase)
        rows += phase_rows
        seconds += phase_seconds
    record = {
        "command": "python -m bench.search --collect",
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "study": spec.model_dump(mode="json", include={"dataset", "model", "budget_examples", "search_space", "optimizer", "schedule"}),
        "phases": [{"name": name, "trials": n, "lr": lr} for name, n, lr in COLLECT_PHASES],
        "num_classes": 10,
        "seconds": round(seconds, 1),
        "trials": rows,
    }
    TRIALS_FILE.parent.mkdir(parents=True, exist_ok=True)  # results/ is not in the repository
    TRIALS_FILE.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{len(rows)} trials in {seconds:.0f}s -> {TRIALS_FILE}")


# --- the surrogate ----------------------------------------------------------------------

class Surrogate:
    """Gaussian-process posterior mean (RBF kernel, constant mean) fitted to measured trials.

    Inputs are (log2 B, log10 of a learning-rate axis, momentum), scaled to [0, 1] over the
    measured ranges and clipped there: outside the data the surrogate holds its boundary value
    instead of inventing a trend. The learning-rate axis is the effective lr or the step size
    lr / (1 - momentum), whichever predicts left-out trials better. A diverged trial counts as
    chance-level loss, ln(classes).
    """

    def __init__(self, record: dict[str, Any]) -> None:
        rows = record["trials"]
        chance = math.log(record["num_classes"])
        losses = [r["final_val_loss"] for r in rows]
        self.y = np.array([min(v, chance) if v is not None and math.isfinite(v) else chance for v in losses])
        self.mean, self.std = self.y.mean(), self.y.std()
        settings = (  # candidate fits: (LOO RMSE, step-size axis, length scales, noise ratio, scaled inputs, bounds)
            self._fit(np.array([self._raw(r["batch_size"], r["effective_lr"], r["momentum"], step_size) for r in rows]), step_size)
            for step_size in (False, True)
        )
        error, self.step_size, self.length, self.noise_ratio, self.x, (self.low, self.span) = min(settings, key=lambda f: f[0])
        self.loo_rmse = error * self.std
        self.noise_std = math.sqrt(self.noise_ratio) * self.std
        self._alpha = np.linalg.solve(self._kernel(self.x, self.x, self.length) + self.noise_ratio * np.eye(len(self.y)), self._z())

    @staticmethod
    def _raw(batch_size: int, effective_lr: float, momentum: float, step_size: bool) -> list[float]:
        rate = effective_lr / (1 - momentum) if step_size else effective_lr
        return [math.log2(batch_size), math.log10(rate), momentum]

    def _fit(self, raw: np.ndarray, step_size: bool) -> tuple[float, bool, np.ndarray, float, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Length scales and noise by the closed-form leave-one-out error of the GP mean."""
        low, span = raw.min(0), np.ptp(raw, 0)
        x = np.clip((raw - low) / span, 0.0, 1.0)
        z = self._z()
        best = (np.inf, np.ones(3), 0.0)
        for length in itertools.product((0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 2.0), repeat=3):
            k = self._kernel(x, x, np.array(length))
            for ratio in (0.003, 0.01, 0.03, 0.1, 0.3):
                inverse = np.linalg.inv(k + ratio * np.eye(len(z)))
                loo = (inverse @ z) / np.diag(inverse)  # residual of each point predicted from the others
                error = float(np.sqrt(np.mean(loo**2)))
                if error < best[0]:
                    best = (error, np.array(length), ratio)
        return best[0], step_size, best[1], best[2], x, (low, span)

    def _z(self) -> np.ndarray:
        return (self.y - self.mean) / self.std

    @staticmethod
    def _kernel(a: np.ndarray, b: np.ndarray, length: np.ndarray) -> np.ndarray:
        d = (a[:, None, :] - b[None, :, :]) / length
        return np.exp(-0.5 * (d**2).sum(-1))

    def __call__(self, batch_size: int, effective_lr: float, momentum: float) -> float:
        raw = np.array([self._raw(batch_size, effective_lr, momentum, self.step_size)])
        point = np.clip((raw - self.low) / self.span, 0.0, 1.0)
        return float(self.mean + self.std * (self._kernel(point, self.x, self.length) @ self._alpha)[0])

    def minimum(self, batch_sizes: list[int]) -> float:
        """The lowest loss over these batch sizes and the measured lr and momentum ranges (a fine grid);
        beyond those ranges the surrogate holds its boundary value, so no search can do better."""
        steps = np.linspace(0.0, 1.0, 201)
        rows = [(math.log2(b) - self.low[0]) / self.span[0] for b in batch_sizes]
        grid = np.array([[row, u, v] for row in rows for u in steps for v in steps[::4]])
        return float((self.mean + self.std * (self._kernel(np.clip(grid, 0.0, 1.0), self.x, self.length) @ self._alpha)).min())

    def fit_quality(self) -> str:
        r2 = 1 - (self.loo_rmse / self.std) ** 2
        return (
            f"{len(self.y)} measured trials, losses {self.y.min():.3f}..{self.y.max():.3f} (std {self.std:.3f}); "
            f"leave-one-out RMSE {self.loo_rmse:.4f} (R^2 {r2:.2f}); lr axis {'lr / (1 - momentum)' if self.step_size else 'effective lr'}; "
            f"length scales (of each measured range) log2 B {self.length[0]:g}, log10 lr {self.length[1]:g}, momentum {self.length[2]:g}; "
            f"estimated noise std {self.noise_std:.4f}"
        )


# --- the search -------------------------------------------------------------------------

def method_spec(method: Method, seed: int) -> StudySpec:
    """The main study's space, with the method's sampler and parameterization, batch sizes as measured."""
    main = load_spec(BASE_STUDY)
    reference = main.lr_parameterization
    # The main study's lr range, expressed in this parameterization at B = reference, momentum 0.9.
    shift = (1 - REFERENCE_MOMENTUM) ** (int(reference.momentum_decoupled) - int(method.decoupled))
    lr = {"low": main.search_space.lr.low * shift, "high": main.search_space.lr.high * shift, "log": True}
    momentum = main.search_space.momentum.model_dump() | {"log": "one_minus" if method.one_minus else False}
    return load_spec(BASE_STUDY, {
        "search_space.batch_size": {"min": 16, "max": 512}, "search_space.lr": lr, "search_space.momentum": momentum,
        "lr_parameterization": {"scaling": method.scaling, "reference_batch_size": reference.reference_batch_size,
                                "momentum_decoupled": method.decoupled},
        "sampler.name": method.sampler, "sampler.seed": seed,
    })


def search_curve(method: Method, seed: int, n_trials: int, surrogate: Surrogate, threshold: float | None = None) -> list[float]:
    """The surrogate's noiseless loss of each trial, in order, up to the first at or below `threshold`
    (all `n_trials` without one); the sampler sees each loss with noise."""
    spec = method_spec(method, seed)
    noise = np.random.default_rng(seed)
    truths: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        hp = space.sample(trial, spec)
        truths.append(surrogate(hp.batch_size, hp.effective_lr, hp.momentum))
        if threshold is not None and truths[-1] <= threshold:
            trial.study.stop()
        return truths[-1] + surrogate.noise_std * float(noise.standard_normal())

    study = optuna.create_study(direction="minimize", sampler=build_sampler(spec))
    study.optimize(objective, n_trials=n_trials)
    return truths


def trials_to_reach(curve: list[float], threshold: float) -> int | None:
    return next((i + 1 for i, value in enumerate(curve) if value <= threshold), None)


@dataclass(frozen=True)
class Outcome:
    """One method over all seeds: trials to reach the bar (N + 1 where not reached within N)."""

    trials: list[int]
    reached: int
    seconds: float  # mean wall seconds per search

    @property
    def median(self) -> float:
        return statistics.median(self.trials)


def ratio_interval(outcome: Outcome, baseline: Outcome, draws: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of median(outcome) / median(baseline), seeds resampled on each side."""
    rng = np.random.default_rng(0)
    a, b = np.array(outcome.trials), np.array(baseline.trials)
    ratios = np.median(rng.choice(a, (draws, a.size)), axis=1) / np.median(rng.choice(b, (draws, b.size)), axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def default_method(main: StudySpec) -> Method:
    """The method the main study (and the spec's defaults) would search with."""
    lr = main.lr_parameterization
    return Method(main.sampler.name, lr.scaling, lr.momentum_decoupled, main.search_space.momentum.log == "one_minus")


def markdown(outcomes: dict[Method, Outcome], surrogate: Surrogate, record: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    n_trials, best = args.trials, surrogate.minimum(method_spec(BASELINE, 0).search_space.batch_sizes())
    base = outcomes[BASELINE]
    main = load_spec(BASE_STUDY)
    default = default_method(main)
    rows = []
    for method, outcome in outcomes.items():
        low, high = ratio_interval(outcome, base)
        rows.append(
            f"| {method.name}{' (default)' if method == default else ''} | {outcome.median:g} | {statistics.mean(outcome.trials):.1f} | "
            f"{outcome.reached}/{len(outcome.trials)} | {outcome.median / base.median:.2f} ({low:.2f}-{high:.2f}) | {outcome.seconds:.2f} |"
        )
    fewest = min(outcomes, key=lambda m: (outcomes[m].median, statistics.mean(outcomes[m].trials)))
    ratio = outcomes[fewest].median / base.median
    study = record["study"]
    lines = [
        "# Search efficiency",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        "Machine: 2 CPU cores, no GPU (the searches run on the surrogate; training only in `--collect`)  ",
        f"Surrogate data: `{record['command']}` ({record['date']}, {record['seconds']:.0f} s): random search on the shared "
        f"CIFAR-10, {study['model']['name']} {study['model']['args']}, {study['budget_examples']:,} examples per trial, "
        f"{study['dataset']['val_size']:g} validation images, stored in `bench/results/{TRIALS_FILE.name}`.  ",
        f"Surrogate: GP posterior mean, {surrogate.fit_quality()}.  ",
        f"Study: `{BASE_STUDY}` search space (batch sizes 16..512, momentum {study['search_space']['momentum']['low']}.."
        f"{study['search_space']['momentum']['high']}); TPE, GP and CMA-ES after {main.sampler.n_startup_trials} random start-up trials "
        f"(CMA-ES draws the batch size at random throughout), QMC a scrambled Sobol sequence; at most {n_trials} trials, seeds 0..{args.seeds - 1}; "
        f"each parameterization's lr range is the study's, matched at B = 256 and momentum {REFERENCE_MOMENTUM}; "
        "log(1-m): 1 - momentum sampled on a log scale over the same momentum range.",
        "",
        f"Best loss: the surrogate's minimum over the searched space, {best:.4f} (lowest measured trial: {surrogate.y.min():.4f}); "
        f"bar (+{WITHIN:.0%}): {best * (1 + WITHIN):.4f}. Trials to reach it: median over seeds (not reached within {n_trials} "
        f"counts as {n_trials + 1}); ratio: to the median of {BASELINE.name}, with a 95% bootstrap interval over seeds.",
        "",
        f"| method | median trials | mean trials | seeds reaching | ratio to {BASELINE.name} | s per search |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"**Target** (within {WITHIN:.0%} of the best loss in <= {TARGET_TRIALS_RATIO:g}x the trials of {BASELINE.name}): "
        f"fewest trials: {fewest.name}, {outcomes[fewest].median:g} / {base.median:g} = {ratio:.2f} "
        f"({verdict(ratio, TARGET_TRIALS_RATIO, '.2f')})." + (_against(outcomes[fewest], outcomes[default], default) if default in outcomes else ""),
    ]
    return "\n".join(lines) + "\n"


def _against(fewest: Outcome, default: Outcome, method: Method) -> str:
    low, high = ratio_interval(fewest, default)
    return f" Against the default ({method.name}): {fewest.median / default.median:.2f}x its trials (95% interval {low:.2f}-{high:.2f})."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n")[0])
    parser.add_argument("--long", action="store_true", help="30 seeds x 100 trials and three more parameterizations")
    parser.add_argument("--collect", action="store_true", help=f"re-measure the real trials into {TRIALS_FILE.name}")
    parser.add_argument("--data", default=DEFAULT_DATA, help="CIFAR-10 archive or folder (for --collect)")
    parser.add_argument("--budget", type=int, default=8192, help="training examples per trial (for --collect)")
    parser.add_argument("--seeds", type=int, help="sampler seeds 0..N-1 (default 12, --long 30)")
    parser.add_argument("--trials", type=int, help="trials per search (default 60, --long 100)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (for --collect)")
    parser.add_argument("--out", type=Path, default=RESULTS / "search.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.collect:
        torch.set_num_threads(args.threads)
        collect(args)
        return 0
    args.seeds = args.seeds or (30 if args.long else 12)
    args.trials = args.trials or (100 if args.long else 60)
    record = json.loads(TRIALS_FILE.read_text())
    surrogate = Surrogate(record)
    print(f"surrogate: {surrogate.fit_quality()}", flush=True)
    threshold = surrogate.minimum(method_spec(BASELINE, 0).search_space.batch_sizes()) * (1 + WITHIN)
    methods = METHODS + (LONG_METHODS if args.long else ())
    counts: dict[Method, list[int]] = {m: [] for m in methods}
    seconds: dict[Method, float] = dict.fromkeys(methods, 0.0)
    for seed in range(args.seeds):
        for method in methods:
            started = time.perf_counter()
            count = trials_to_reach(search_curve(method, seed, args.trials, surrogate, threshold), threshold)
            seconds[method] += time.perf_counter() - started
            counts[method].append(count or args.trials + 1)
        print(f"seed {seed}: " + "  ".join(f"{m.name} {counts[m][-1]}" for m in methods), flush=True)
    outcomes = {m: Outcome(counts[m], sum(n <= args.trials for n in counts[m]), seconds[m] / args.seeds) for m in methods}
    command = "python -m bench.search" + (" --long" if args.long else "")
    text = markdown(outcomes, surrogate, record, args, command)
    return publish(args.out, text)


if __name__ == "__main__":
    raise SystemExit(main())
