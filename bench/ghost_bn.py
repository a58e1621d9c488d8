"""Batch norm over the full batch or over ghost batches: which should a batch-size study train?

    python -m bench.ghost_bn [--data PATH] [--ghost N] [--budget 16384] [--long]

Splitting a batch into micro-batches computes batch-norm statistics over each micro-batch
(ghost batch norm, Hoffer et al. 2017), which changes what is trained. This runs the same
(batch size, learning rate, momentum) configurations of `cifar_bs` with the same seeds under
`batch_norm.group: full` and `batch_norm.group: N`, through the service's Objective, and
reports the final validation loss and accuracy and the training examples/s of each. N defaults
to the speed profile's fastest micro-batch for the largest batch size. `--long` adds a second
seed and a larger budget.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import optuna

from bench.report import Table, write_result
from bench.throughput import load_problem
from search.measure import speed
from search.measure.profile import fastest_micro_batch
from search.record import BATCH_SIZE, LR, MOMENTUM, TrialRecord
from search.study.objective import Objective
from search.study.space import build_sampler

BATCH_SIZES = (512, 2048)
# (lr, momentum) in cifar_bs's parameterization: effective_lr = lr * (B / 256) * (1 - momentum).
CONFIGURATIONS = ((4.0, 0.85), (12.0, 0.85))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="CIFAR-10 (default: the shared copy)")
    parser.add_argument("--ghost", type=int, default=None, help="ghost batch size (default: the profile's fastest micro-batch)")
    parser.add_argument("--budget", type=int, default=16384, help="training examples per run")
    parser.add_argument("--long", action="store_true", help="two seeds, and 4x the budget")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ghost_bn.md"))
    args = parser.parse_args(argv)
    problem = load_problem("cifar_bs", args.data)
    # With the profile the ghost runs are split at the fastest micro-batch; without it (--ghost) they
    # run in one pass whose batch-norm layers normalize groups of N: the same statistics.
    profile = None if args.ghost else speed.measure(problem.spec, problem.data, "cpu")
    ghost = args.ghost or fastest_micro_batch(profile, max(BATCH_SIZES))
    budget = args.budget * (4 if args.long else 1)
    seeds = (0, 1) if args.long else (0,)
    settings: list[str | int] = ["full", ghost]
    results: dict[tuple[object, ...], optuna.trial.FrozenTrial] = {}
    for seed in seeds:
        for batch_size in BATCH_SIZES:
            for lr, momentum in CONFIGURATIONS:
                # Alternate the order so that load on the shared machine does not favour one setting.
                for setting in settings if len(results) % 4 == 0 else settings[::-1]:
                    spec = problem.spec.model_copy(
                        update={
                            "budget_examples": budget,
                            "batch_norm": problem.spec.batch_norm.model_copy(update={"group": setting}),
                            "pruner": problem.spec.pruner.model_copy(update={"name": "none", "report_every_examples": budget}),
                            "sampler": problem.spec.sampler.model_copy(update={"seed": seed}),
                        }
                    )
                    study = optuna.create_study(sampler=build_sampler(spec))
                    study.enqueue_trial({BATCH_SIZE: batch_size, LR: lr, MOMENTUM: momentum})
                    study.optimize(Objective(spec, problem.data, "cpu", profile=profile), n_trials=1)
                    trial = study.trials[0]
                    results[(seed, batch_size, lr, momentum, setting)] = trial
                    print(seed, batch_size, lr, momentum, setting, TrialRecord.of(trial).final_val_loss, TrialRecord.of(trial).micro_batch_size, flush=True)
    rows = []
    wins = []
    for batch_size in BATCH_SIZES:
        for lr, momentum in CONFIGURATIONS:
            cells = {}
            for setting in settings:
                trials = [results[(seed, batch_size, lr, momentum, setting)] for seed in seeds]
                cells[setting] = (
                    statistics.mean(TrialRecord.of(t).final_val_loss for t in trials),  # type: ignore[misc]
                    statistics.mean(TrialRecord.of(t).final_val_acc for t in trials),  # type: ignore[misc]
                    statistics.median(TrialRecord.of(t).examples_per_second for t in trials),  # type: ignore[type-var]
                    TrialRecord.of(trials[0]).micro_batch_size,
                )
            wins.append(cells[ghost][0] < cells["full"][0])
            rows.append(
                [f"{batch_size:,}", f"{lr:g}", f"{momentum:g}"]
                + [f"{cells[s][0]:.4f} / {cells[s][1]:.4f}" for s in settings]
                + [f"{cells[s][2]:,.0f} (micro {cells[s][3]:,})" for s in settings]
                + [f"{cells[ghost][0] - cells['full'][0]:+.4f}"]
            )
    table = Table(
        ["B", "lr", "momentum", "full: val loss / acc", f"ghost {ghost}: val loss / acc", "full ex/s", f"ghost {ghost} ex/s", "ghost − full loss"], rows
    )
    body = [
        f"cifar_bs model (airbench {problem.spec.model.args}), {budget:,} training examples per run, seeds {list(seeds)} "
        f"(the same seed, hence the same initial weights and batches, under both settings), validation on 5,000 held-out images. "
        f"Ghost batch size {ghost}: "
        + ("given with --ghost." if args.ghost else f"the speed profile's fastest micro-batch for B = {max(BATCH_SIZES):,}."),
        "",
        table.markdown(),
        "",
        f"Ghost batch norm had the lower validation loss in {sum(wins)} of {len(wins)} configurations.",
    ]
    write_result(args.out, "Ghost batch norm against full-batch statistics (`python -m bench.ghost_bn`)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
