"""The recipe without bias between batch sizes: the frontier with each change off and on, side by side.

    python -m bench.recipe             # cifar_bs at 8,192 examples, batch sizes 32/128/512, ~20 min on 2 CPU cores
    python -m bench.recipe --long      # every variant in VARIANTS
    python -m bench.recipe --variants "recipe (defaults)" "ghost batch norm over 32"   # any of VARIANTS

Each variant is a whole frontier study (`strategy: frontier`, the real service path: study file +
overrides, `create_or_resume` on a SQLite file, `run_worker`) of the `cifar_bs` model on the shared
CIFAR-10 at a small budget: the default recipe (warm-up 5% of every batch size's steps, batch-norm
recalibration, no weight decay on normalization parameters and biases), then the same with one
change: the former warm-up floor of 10 steps, no recalibration, decay on norm and bias (`--long`
adds: all three, the recipe before them; the warm-up fixed in examples; batch-norm statistics over
groups of 32 examples at every batch size; and both). The sampler seed and the paired training seeds
are the same in every variant, so the rows differ by the recipe only. Writes bench/results/recipe.md.
"""
from __future__ import annotations

import argparse
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from bench import publish
from bench.pruning import DEFAULT_DATA, run_study
from search.analysis.frontier import FrontierRow, frontier_rows, recommend
from search.config.load import load_spec
from search.data.images import load_dataset

RESULTS = Path(__file__).resolve().parent / "results"
BASE_STUDY = "cifar_bs"
WARMUP_FLOOR = {"schedule.warmup_min_steps": 10}  # the default until 2026-12-08
RECALIBRATION_OFF = {"batch_norm.recalibrate_examples": 0}
DECAY_ON = {"optimizer.decay_norm_and_bias": True}
# Batch-norm statistics over 32 examples at every batch size (Goyal et al. 2017 kept 32 per worker); at 32 and
# below it is the whole batch.
GHOST_32 = {"batch_norm.group": 32}
WARMUP_SHARE = 0.05  # warm-up fixed in examples: this share of the budget at every batch size


def warmup_in_examples(budget: int) -> dict[str, Any]:
    return {"schedule.warmup_examples": round(WARMUP_SHARE * budget)}


VARIANTS: dict[str, Callable[[int], dict[str, Any]]] = {
    "recipe (defaults)": lambda budget: {},
    "warm-up floor of 10 steps": lambda budget: WARMUP_FLOOR,
    "no batch-norm recalibration": lambda budget: RECALIBRATION_OFF,
    "weight decay on norm and bias": lambda budget: DECAY_ON,
    "the recipe before 2026-11-30": lambda budget: {**WARMUP_FLOOR, **RECALIBRATION_OFF, **DECAY_ON},
    "warm-up in examples": warmup_in_examples,
    "ghost batch norm over 32": lambda budget: GHOST_32,
    "warm-up in examples, ghost batch norm over 32": lambda budget: {**warmup_in_examples(budget), **GHOST_32},
}
DEFAULT_VARIANTS = list(VARIANTS)[:4]  # `--long` adds the others


def task_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "dataset.path": args.data,
        "dataset.val_size": args.val_size,
        "budget_examples": args.budget,
        "strategy": "frontier",
        "frontier": {"trials_per_batch_size": args.trials_per_batch_size, "seeds": args.seeds, "efficiency_curve": False},
        "n_trials": len(args.batch_sizes) * (args.trials_per_batch_size + args.seeds),  # cifar_bs sets its own
        "search_space.batch_size": args.batch_sizes,
        "pruner": {"name": "successive_halving", "report_every_examples": args.budget // 4, "args": {"reduction_factor": 3}},
        "diagnostics.enabled": False,
        "checkpoints.keep": "none",
        "logging.logger": "none",
    }


def _cell(row: FrontierRow | None) -> str:
    if row is None:
        return "–"
    spread = f" ± {row.val_loss_ci95:.3f}" if row.val_loss_ci95 is not None else ""
    return f"{row.val_loss_mean:.3f}{spread} (lr {row.effective_lr:.3g}, m {row.momentum:.2f})"


def markdown(results: dict[str, list[FrontierRow]], advice: dict[str, str], args: argparse.Namespace, command: str) -> str:
    sizes = args.batch_sizes
    lines = [
        "# The recipe, change by change",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {platform.machine()} with 2 CPU cores, no GPU, {torch.get_num_threads()} torch thread(s)  ",
        f"Task: study `{BASE_STUDY}` (airbench) on the shared CIFAR-10, {args.val_size:,} validation images, "
        f"{args.budget:,} examples per trial, frontier of batch sizes {sizes}: {args.trials_per_batch_size} lr/momentum "
        f"trials per batch size, then {args.seeds} paired seeds of each best. Cells: mean final validation loss over the "
        f"seeds ± the t-based 95% half-width, and the configuration chosen. Spread: the largest minus the smallest mean.",
        "",
        "| variant | " + " | ".join(f"B={b:,}" for b in sizes) + " | spread | recommended |",
        "|---|" + "---:|" * len(sizes) + "---:|---|",
    ]
    for variant, rows in results.items():
        by = {r.batch_size: r for r in rows}
        means = [r.val_loss_mean for r in rows]
        spread = f"{max(means) - min(means):.3f}" if len(means) > 1 else "–"
        lines.append(f"| {variant} | " + " | ".join(_cell(by.get(b)) for b in sizes) + f" | {spread} | {advice[variant]} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.recipe", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="CIFAR-10 archive or folder (see the README's Data section)")
    parser.add_argument("--budget", type=int, default=8192, help="training examples per trial (a multiple of 4 x the largest batch size)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--trials-per-batch-size", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--long", action="store_true", help="every variant in VARIANTS")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="VARIANT", help="default: the recipe and each change off")
    parser.add_argument("--out", type=Path, default=RESULTS / "recipe.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = load_spec(BASE_STUDY, task_overrides(args))
    assert base.dataset is not None
    images = load_dataset(base.dataset)
    results: dict[str, list[FrontierRow]] = {}
    advice: dict[str, str] = {}
    variants = args.variants or (list(VARIANTS) if args.long else DEFAULT_VARIANTS)
    for index, variant in enumerate(variants):
        spec = load_spec(BASE_STUDY, {**task_overrides(args), **VARIANTS[variant](args.budget), "name": f"recipe-{index}"})
        trials, seconds = run_study(spec, images)
        rows = frontier_rows(trials)
        pick = recommend(trials, rows)
        results[variant] = rows
        advice[variant] = f"B={pick.batch_size:,}" if pick else "–"
        print(f"{variant:<32} {seconds:6.0f}s  " + "  ".join(f"B={r.batch_size}: {r.val_loss_mean:.4f}" for r in rows), flush=True)
    command = "python -m bench.recipe " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = markdown(results, advice, args, command)
    return publish(args.out, text)


if __name__ == "__main__":
    raise SystemExit(main())
