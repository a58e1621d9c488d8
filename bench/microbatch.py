"""Large batches at the fastest micro-batch's speed: the micro-batched step against the alternatives.

    python -m bench.microbatch [--data PATH] [--repeats N] [--seconds S] [--long]

For the models of `smoke` and `cifar_bs` and batch sizes 512 and 2048, each repeat trains,
through the service's `train()` (Lightning module, on-device data path), in rotating order:

* plain: one forward/backward pass of the whole batch B per step;
* micro-batched: B split into micro-batches of the speed profile's fastest size m, gradients
  accumulated to the exact B-example gradient, one optimizer step per B examples;
* best micro alone: steps of m examples, the device's best speed (the target's reference).

Steady-state examples/s is timed after warm-up steps; the medians of the per-repeat ratios are
reported. The target is micro-batched >= 0.9x best micro alone. The profile is measured in the
same run (`search.measure.speed.measure`), so m is this machine's fastest size at the time.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
from pathlib import Path

import optuna

from bench.report import Table, write_result
from bench.throughput import Problem, StepTimer, load_problem
from search.measure import profile as profiles
from search.measure import speed
from search.measure.profile import fastest_micro_batch
from search.study.reporting import ExamplesSeenReporter
from search.train.plan import TrainingPlan
from search.train.run import train

STUDIES = ("smoke", "cifar_bs")
BATCH_SIZES = (512, 2048)
TARGET = 0.9


def examples_per_second(problem: Problem, batch_size: int, micro_batch_size: int | None, rate_guess: float, seconds: float) -> float:
    """One run of `train()`: warm-up steps (about half the timed examples), then the timed window."""
    timed = max(1, round(seconds * rate_guess / batch_size))
    warmup = max(1, math.ceil(timed / 2))
    plan = TrainingPlan(batch_size, warmup + timed, 0.02, 0.9, report_every_examples=(warmup + timed) * batch_size, seed=0, micro_batch_size=micro_batch_size)
    timer = StepTimer(warmup)
    trial = optuna.create_study().ask()  # in memory: this times the training step, not storage
    train(problem.step(0), problem.data, plan, problem.spec.optimizer, problem.spec.schedule, [ExamplesSeenReporter(trial), timer])
    return timed * batch_size / (timer.window_end - timer.window_start)


def _write(out: Path, rows: list[list[str]], verdicts: list[bool], repeats: int, seconds: float) -> None:
    table = Table(
        ["study (model)", "B", "micro m", "plain ex/s", "micro-batched ex/s", "best micro alone ex/s", "micro-batched / plain", "micro-batched / best micro (range)", f">= {TARGET}x"],
        rows,
    )
    body = [
        f"{repeats} interleaved repeats of about {seconds:g} s each per variant; ex/s are medians, ratios the medians of the per-repeat ratios. "
        "m is the speed profile's fastest micro-batch (measured in this run) among the sizes dividing B; for cifar_bs the "
        "micro-batched step normalizes over m examples (ghost batch norm), the plain step over B.",
        "",
        table.markdown(),
        "",
        f"Target (micro-batched >= {TARGET}x the best micro-batch alone) met in {sum(verdicts)} of {len(verdicts)} cases.",
        f"Load average (1 min) when written: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other jobs share the machine).",
    ]
    write_result(out, "Large batches at the fastest micro-batch's speed (`python -m bench.microbatch`)", body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="CIFAR-10 for cifar_bs (default: the shared copy)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per (model, batch size)")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per run")
    parser.add_argument("--long", action="store_true", help="5 repeats of 10 s each")
    parser.add_argument("--profile-seconds", type=float, default=120.0, help="time limit of each speed profile")
    parser.add_argument("--out", type=Path, default=Path("bench/results/microbatch.md"))
    args = parser.parse_args(argv)
    # The profile's own limit suits a worker's start-up; here it must reach the sizes we compare.
    speed.PROFILE_SECONDS = args.profile_seconds
    repeats, seconds = (5, 10.0) if args.long else (args.repeats, args.seconds)
    rows, verdicts = [], []
    for study in STUDIES:
        problem = load_problem(study, args.data)
        profile = speed.measure(problem.spec, problem.data, "cpu")
        print(profiles.format_table(profile), flush=True)
        for batch_size in BATCH_SIZES:
            micro = fastest_micro_batch(profile, batch_size)
            runs = {"plain": (batch_size, None), "micro-batched": (batch_size, micro), "best micro alone": (micro, None)}
            rates: dict[str, list[float]] = {name: [] for name in runs}
            for repeat in range(repeats):
                names = list(runs)
                for name in names[repeat % 3 :] + names[: repeat % 3]:  # rotate so no variant always runs first
                    size, split = runs[name]
                    rates[name].append(examples_per_second(problem, size, split, profile.rate(micro), seconds))
                    print(study, batch_size, name, f"{rates[name][-1]:,.0f} ex/s", flush=True)
            vs_plain = statistics.median(m / p for m, p in zip(rates["micro-batched"], rates["plain"]))
            vs_best = statistics.median(m / b for m, b in zip(rates["micro-batched"], rates["best micro alone"]))
            verdicts.append(vs_best >= TARGET)
            rows.append(
                [f"{study} ({problem.spec.model.describe()})", f"{batch_size:,}", f"{micro:,}"]
                + [f"{statistics.median(rates[name]):,.0f}" for name in runs]
                + [f"{vs_plain:.2f}x", f"{vs_best:.2f}x ({min(m / b for m, b in zip(rates['micro-batched'], rates['best micro alone'])):.2f}–"
                   f"{max(m / b for m, b in zip(rates['micro-batched'], rates['best micro alone'])):.2f})", "yes" if vs_best >= TARGET else "no"]
            )
            # Written after every row: on a busy machine a partial table is better than none.
            _write(args.out, rows, verdicts, repeats, seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
