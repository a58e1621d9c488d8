"""Search efficiency: trials needed to come within 2% of the best loss, per sampler and LR parameterization.

    python -m bench.search             # 20 seeds x 60 trials per method on the surrogate (< 10 min on 2 CPU cores)
    python -m bench.search --long      # 50 seeds x 100 trials, and two more parameterizations
    python -m bench.search --collect   # re-measure the real trials the surrogate is fitted to (80 trainings)

Training thousands of trials is out of reach on a CPU, so the samplers search a surrogate
fitted to real trials: `--collect` runs a random-search study through the service (the same
CIFAR-10 task as bench/pruning.py, pruning off) and stores every trial's batch size,
effective learning rate, momentum and final validation loss in bench/results/search_trials.json.
The surrogate is a Gaussian-process posterior mean over (log2 B, log10 effective lr,
momentum), its length scales and noise chosen by leave-one-out error. Each method then runs a
real Optuna study whose trials go through `space.sample` (the study's own parameterization and
`effective_lr`), and are scored by the surrogate plus Gaussian noise of the size the fit
estimated. Writes bench/results/search.md.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
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
from search.record import TrialRecord
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
    name: str
    sampler: str
    scaling: str
    decoupled: bool


METHODS = (
    Method("random (raw lr)", "random", "none", False),
    Method("TPE raw lr", "tpe", "none", False),
    Method("TPE sqrt(B)", "tpe", "sqrt", False),
    Method("TPE linear(B)", "tpe", "linear", False),
    Method("TPE linear(B) + decoupled", "tpe", "linear", True),
)
LONG_METHODS = (
    Method("TPE raw + decoupled", "tpe", "none", True),
    Method("TPE sqrt(B) + decoupled", "tpe", "sqrt", True),
)


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
        "phase": phase, "number": trial.number, "state": trial.state.name, "batch_size": trial.params["batch_size"],
        "lr": trial.params["lr"], "effective_lr": record.effective_lr, "momentum": trial.params["momentum"],
        "final_val_loss": record.final_val_loss, "final_val_acc": record.final_val_acc,
        "reason": record.reason or "", "wall_seconds": record.wall_seconds,
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
    return load_spec(BASE_STUDY, {
        "search_space.batch_size": {"min": 16, "max": 512}, "search_space.lr": lr,
        "lr_parameterization": {"scaling": method.scaling, "reference_batch_size": reference.reference_batch_size,
                                "momentum_decoupled": method.decoupled},
        "sampler.name": method.sampler, "sampler.seed": seed,
    })


def search_curve(method: Method, seed: int, n_trials: int, surrogate: Surrogate) -> list[float]:
    """The surrogate's noiseless loss of each trial, in order; the sampler sees it with noise."""
    spec = method_spec(method, seed)
    noise = np.random.default_rng(seed)
    truths: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        hp = space.sample(trial, spec)
        truths.append(surrogate(hp.batch_size, hp.effective_lr, hp.momentum))
        return truths[-1] + surrogate.noise_std * float(noise.standard_normal())

    study = optuna.create_study(direction="minimize", sampler=build_sampler(spec))
    study.optimize(objective, n_trials=n_trials)
    return truths


def trials_to_reach(curve: list[float], threshold: float) -> int | None:
    return next((i + 1 for i, value in enumerate(curve) if value <= threshold), None)


def markdown(curves: dict[str, list[list[float]]], surrogate: Surrogate, record: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    best = min(min(c) for runs in curves.values() for c in runs)
    threshold = best * (1 + WITHIN)
    n_trials = len(next(iter(curves.values()))[0])
    medians: dict[str, float] = {}
    rows = []
    for name, runs in curves.items():
        counts = [trials_to_reach(c, threshold) for c in runs]
        censored = [n if n is not None else n_trials + 1 for n in counts]  # not reached: counted as N + 1
        medians[name] = statistics.median(censored)
        reached = [n for n in counts if n is not None]
        rows.append(
            f"| {name} | {medians[name]:g} | {statistics.mean(censored):.1f} | {len(reached)}/{len(runs)} | "
            f"{statistics.mean(min(c) for c in runs):.4f} | {statistics.mean(min(c[:20]) for c in runs):.4f} |"
        )
    main = load_spec(BASE_STUDY)
    default = main.lr_parameterization
    default_name = next(m.name for m in METHODS + LONG_METHODS
                        if m.sampler == "tpe" and m.scaling == default.scaling and m.decoupled == default.momentum_decoupled)
    best_tpe = min((name for name in medians if name.startswith("TPE")), key=medians.get)
    ratio = medians[default_name] / medians["TPE raw lr"]
    study = record["study"]
    lines = [
        "# Search efficiency",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        "Machine: 2-core CPU, no GPU (the searches run on the surrogate; training only in `--collect`)  ",
        f"Surrogate data: `{record['command']}` ({record['date']}, {record['seconds']:.0f} s): random search on the shared "
        f"CIFAR-10, {study['model']['name']} {study['model']['args']}, {study['budget_examples']:,} examples per trial, "
        f"{study['dataset']['val_size']:g} validation images, stored in `bench/results/{TRIALS_FILE.name}`.  ",
        f"Surrogate: GP posterior mean, {surrogate.fit_quality()}.  ",
        f"Study: `{BASE_STUDY}` search space (batch sizes 16..512, momentum {study['search_space']['momentum']['low']}.."
        f"{study['search_space']['momentum']['high']}), TPE after {main.sampler.n_startup_trials} random start-up trials, {n_trials} trials, seeds 0..{args.seeds - 1}; "
        f"each parameterization's lr range is the study's, matched at B = 256 and momentum {REFERENCE_MOMENTUM}.",
        "",
        f"Best loss found by any method: {best:.4f} (lowest measured trial: {surrogate.y.min():.4f}); threshold (+{WITHIN:.0%}): {threshold:.4f}. Trials to reach it: "
        f"median over seeds (not reached within {n_trials} counts as {n_trials + 1}).",
        "",
        "| method | median trials | mean trials | seeds reaching | mean best loss | mean best of first 20 |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"**Target** (the default, `{default.describe()}` = {default_name}, needs <= half the trials of TPE raw lr): "
        f"{medians[default_name]:g} / {medians['TPE raw lr']:g} = {ratio:.2f} "
        f"({verdict(ratio, TARGET_TRIALS_RATIO, '.2f')}). "
        f"Fewest trials among the TPE variants: {best_tpe}.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n")[0])
    parser.add_argument("--long", action="store_true", help="50 seeds x 100 trials and two more parameterizations")
    parser.add_argument("--collect", action="store_true", help=f"re-measure the real trials into {TRIALS_FILE.name}")
    parser.add_argument("--data", default=DEFAULT_DATA, help="CIFAR-10 archive or folder (for --collect)")
    parser.add_argument("--budget", type=int, default=8192, help="training examples per trial (for --collect)")
    parser.add_argument("--seeds", type=int, help="sampler seeds 0..N-1 (default 20, --long 50)")
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
    args.seeds = args.seeds or (50 if args.long else 20)
    n_trials = args.trials or (100 if args.long else 60)
    record = json.loads(TRIALS_FILE.read_text())
    surrogate = Surrogate(record)
    print(f"surrogate: {surrogate.fit_quality()}", flush=True)
    methods = METHODS + (LONG_METHODS if args.long else ())
    curves: dict[str, list[list[float]]] = {m.name: [] for m in methods}
    for seed in range(args.seeds):
        for method in methods:
            curves[method.name].append(search_curve(method, seed, n_trials, surrogate))
        print(f"seed {seed}: " + "  ".join(f"{name} {min(runs[-1]):.4f}" for name, runs in curves.items()), flush=True)
    command = "python -m bench.search" + (" --long" if args.long else "")
    text = markdown(curves, surrogate, record, args, command)
    return publish(args.out, text)


if __name__ == "__main__":
    raise SystemExit(main())
