"""Can a rung judge a trial? Within each batch size, the rank correlation of the loss at each rung with the final loss.

    python -m bench.rung_correlation   # reads bench.search's measured trials (seconds)

A pruner that stops a trial at a rung bets that its rank there is its rank at the end. Under a
decaying learning rate that bet favours low learning rates (they look better early and lose at
the end), so it is measured before a pruner is trusted: `python -m bench.search --collect` trains
80 random-search trials on CIFAR-10 with pruning off, validating at eight equally spaced rungs, and
stores every trial's validation losses. Here, per batch size (only its own trials, as the frontier's
pruner compares them) and per rung, Spearman's rank correlation between the loss at the rung and the
final loss; the pooled row is the mean over batch sizes of Fisher-z transformed correlations.
A diverged loss counts as chance-level, ln(classes). Writes bench/results/rung_correlation.md.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from bench import publish
from bench.pruning import RESULTS
from bench.search import TRIALS_FILE

THRESHOLD = 0.8  # issue 23: prune only where the rung ranks trials as the end does
MIN_TRIALS = 5  # fewer trials of a batch size: no correlation worth reporting


def _loss(value: Any, chance: float) -> float:
    return min(float(value), chance) if value is not None and math.isfinite(float(value)) else chance


def correlations(record: dict[str, Any]) -> tuple[list[int], dict[int, dict[int, float]], dict[int, int]]:
    """(rungs in examples, batch size -> rung -> Spearman rho, batch size -> trials), from trials with every rung."""
    chance = math.log(record["num_classes"])
    rows = [r for r in record["trials"] if r.get("intermediate")]
    if not rows:
        raise SystemExit(f"{TRIALS_FILE} holds no validation losses per rung: re-measure with `python -m bench.search --collect`.")
    rungs = sorted({int(k) for r in rows for k in r["intermediate"]})
    by_size: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_size[r["batch_size"]].append(r)
    table: dict[int, dict[int, float]] = {}
    counts = {}
    for size, trials in sorted(by_size.items()):
        if len(trials) < MIN_TRIALS:
            continue
        final = [_loss(r["final_val_loss"], chance) for r in trials]
        counts[size] = len(trials)
        table[size] = {}
        for rung in rungs:
            at = [_loss(r["intermediate"].get(str(rung)), chance) for r in trials]
            rho = spearmanr(at, final).statistic
            table[size][rung] = float(rho) if np.isfinite(rho) else math.nan
    return rungs, table, counts


def pooled(table: dict[int, dict[int, float]], rung: int) -> float:
    """Mean over batch sizes in Fisher's z (arctanh), back-transformed."""
    z = [math.atanh(min(0.999999, table[b][rung])) for b in table if math.isfinite(table[b][rung])]
    return math.tanh(sum(z) / len(z)) if z else math.nan


def first_trusted_rung(rungs: list[int], table: dict[int, dict[int, float]]) -> int | None:
    """The earliest rung from which every batch size's correlation stays at or above THRESHOLD."""
    for i, rung in enumerate(rungs):
        if all(table[b][r] >= THRESHOLD for b in table for r in rungs[i:]):
            return rung
    return None


def markdown(record: dict[str, Any]) -> str:
    rungs, table, counts = correlations(record)
    budget = record["study"]["budget_examples"]
    sizes = sorted(table)
    trusted = first_trusted_rung(rungs, table)
    lines = [
        "# Rank correlation of each rung with the final loss",
        "",
        "Command: `python -m bench.rung_correlation`  ",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        f"Trials: `{record['command']}` ({record['date']}): {sum(counts.values())} random-search trials, pruning off, "
        f"{record['study']['model']['name']} {record['study']['model']['args']}, {budget:,} examples per trial, "
        f"{record['study']['schedule']['decay']} decay; per batch size: " + ", ".join(f"{b}: {counts[b]}" for b in sizes) + ".",
        "",
        f"| rung (examples) | share of budget | {' | '.join(f'B={b}' for b in sizes)} | pooled |",
        "|---:|---:|" + "---:|" * len(sizes) + "---:|",
    ]
    for rung in rungs:
        cells = " | ".join(f"{table[b][rung]:.2f}" for b in sizes)
        lines.append(f"| {rung:,} | {rung / budget:.3f} | {cells} | {pooled(table, rung):.2f} |")
    lines += [
        "",
        f"First rung from which every batch size's correlation stays >= {THRESHOLD}: "
        + (f"{trusted:,} examples ({trusted / budget:.3f} of the budget)." if trusted is not None else "none."),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.rung_correlation", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "rung_correlation.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not TRIALS_FILE.exists():
        print(f"{TRIALS_FILE} is missing: measure the trials first with `python -m bench.search --collect`.")
        return 2
    return publish(args.out, markdown(json.loads(TRIALS_FILE.read_text())))


if __name__ == "__main__":
    raise SystemExit(main())
