"""Frontier tuning efficiency: search trials per batch size to come within 2% of that batch size's best.

    python -m bench.frontier_search    # 2 samplers x 2 ways of tuning, 20 seeds x 24 rounds (minutes, on the surrogate)

A frontier study tunes learning rate and momentum at every batch size. Per batch size, its tuning
either sees only that batch size's trials (`frontier.share_tuning: false`, `PerBatchSizeSampler`
alone) or every batch size's, aligned to it (`share_tuning: true`: lr moved along the slope fitted
so far, losses ranked within each batch size). Each runs as the frontier runs its search rounds
(one trial of each batch size per round, the batch size fixed by the queue), through the real
sampler and `space.sample`, on bench.search's surrogate (a GP posterior mean fitted to 80 real
CIFAR-10 trainings, `python -m bench.search --collect`) plus its estimated noise. The bar of batch
size B is 2% above the surrogate's minimum at B over the searched lr and momentum ranges; a batch
size counts the rounds until a trial's noiseless loss is at or below its bar (rounds + 1 if never).
Target (issue 23): sharing needs at most half the trials of TPE on each batch size alone. Writes
bench/results/frontier_search.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import optuna

from bench import publish
from bench.pruning import BASE_STUDY, RESULTS, verdict
from bench.search import SAMPLER_NAMES, TRIALS_FILE, WITHIN, Surrogate
from search.config.load import load_spec
from search.config.spec import FrontierSpec, StudySpec
from search.record import BATCH_SIZE
from search.study import space
from search.study.space import build_sampler

TARGET_TRIALS_RATIO = 0.5
SAMPLERS = ("tpe", "random")


@dataclass(frozen=True)
class Way:
    sampler: str
    shared: bool

    @property
    def name(self) -> str:
        return f"{SAMPLER_NAMES[self.sampler]}, " + ("shared across batch sizes" if self.shared else "per batch size")


BASELINE = Way("tpe", False)  # the yardstick: TPE on each batch size's own trials, the default before sharing
WAYS = (BASELINE, Way("tpe", True), Way("random", False))
DEFAULT = Way("tpe", FrontierSpec().share_tuning)


def frontier_spec(way: Way, seed: int) -> StudySpec:
    """The main study's space as a frontier study with the default 8 trials per batch size (so the
    default start-up of 2 random trials per batch size), tuned the given way."""
    return load_spec(BASE_STUDY, {
        "strategy": "frontier", "search_space.batch_size": {"min": 16, "max": 512},
        "frontier.share_tuning": way.shared, "sampler.name": way.sampler, "sampler.seed": seed,
    })


def rounds_to_reach(way: Way, seed: int, rounds: int, surrogate: Surrogate, bars: dict[int, float]) -> dict[int, int]:
    """Per batch size, the first round whose trial is within the bar (rounds + 1 if none)."""
    spec = frontier_spec(way, seed)
    noise = np.random.default_rng(seed)
    study = optuna.create_study(direction="minimize", sampler=build_sampler(spec))
    reached: dict[int, int] = {}
    for round_ in range(1, rounds + 1):
        for size in spec.search_space.batch_sizes():
            study.enqueue_trial({BATCH_SIZE: size})
            trial = study.ask()
            hp = space.sample(trial, spec)
            truth = surrogate(hp.batch_size, hp.effective_lr, hp.momentum)
            if truth <= bars[size]:
                reached.setdefault(size, round_)
            study.tell(trial, truth + surrogate.noise_std * float(noise.standard_normal()))
    return {size: reached.get(size, rounds + 1) for size in bars}


def median_over(counts: list[dict[int, int]]) -> float:
    return statistics.median(n for seed in counts for n in seed.values())


def ratio_interval(counts: list[dict[int, int]], baseline: list[dict[int, int]], draws: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the ratio of medians, seeds resampled on each side (a seed's batch sizes together)."""
    rng = np.random.default_rng(0)
    a = np.array([list(seed.values()) for seed in counts])
    b = np.array([list(seed.values()) for seed in baseline])
    ratios = [
        np.median(a[rng.integers(0, len(a), len(a))]) / np.median(b[rng.integers(0, len(b), len(b))]) for _ in range(draws)
    ]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def markdown(results: dict[Way, list[dict[int, int]]], seconds: dict[Way, float], surrogate: Surrogate, minima: dict[int, float],
             record: dict, args: argparse.Namespace) -> str:
    sizes = sorted(minima)
    base = results[BASELINE]
    rows = []
    for way, counts in results.items():
        low, high = ratio_interval(counts, base)
        per_size = " | ".join(f"{statistics.median(seed[b] for seed in counts):g}" for b in sizes)
        rows.append(
            f"| {way.name}{' (default)' if way == DEFAULT else ''} | {median_over(counts):g} | {per_size} | "
            f"{sum(n <= args.rounds for seed in counts for n in seed.values())}/{len(counts) * len(sizes)} | "
            f"{median_over(counts) / median_over(base):.2f} ({low:.2f}-{high:.2f}) | {seconds[way]:.1f} |"
        )
    shared = results[Way("tpe", True)]
    ratio = median_over(shared) / median_over(base)
    return "\n".join([
        "# Frontier tuning efficiency",
        "",
        f"Command: `python -m bench.frontier_search{'' if args.seeds == 20 and args.rounds == 24 else f' --seeds {args.seeds} --rounds {args.rounds}'}`  ",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        "Machine: 2 CPU cores, no GPU (the searches run on the surrogate)  ",
        f"Surrogate: bench.search's, from `{record['command']}` ({record['date']}); {surrogate.fit_quality()}.  ",
        f"Study: `{BASE_STUDY}`'s space as a frontier study (batch sizes {', '.join(map(str, sizes))}; 8 trials per batch size, "
        f"so 2 random start-up trials per batch size), run for {args.rounds} rounds; seeds 0..{args.seeds - 1}.  ",
        "Bars (each batch size's surrogate minimum + 2%): " + ", ".join(f"{b}: {minima[b] * (1 + WITHIN):.4f}" for b in sizes) + ".",
        "",
        f"Rounds (search trials per batch size) to come within {WITHIN:.0%} of that batch size's best: median over seeds x batch sizes "
        f"(not reached in {args.rounds} counts as {args.rounds + 1}), and per batch size over seeds; ratio to {BASELINE.name}, "
        "95% bootstrap interval over seeds.",
        "",
        f"| tuning | median | {' | '.join(f'B={b}' for b in sizes)} | reached | ratio | s per study |",
        "|---|---:|" + "---:|" * len(sizes) + "---:|---:|---:|",
        *rows,
        "",
        f"**Target** (sharing needs <= {TARGET_TRIALS_RATIO:g}x the trials of {BASELINE.name}): "
        f"{median_over(shared):g} / {median_over(base):g} = {ratio:.2f} ({verdict(ratio, TARGET_TRIALS_RATIO, '.2f')}).",
    ]) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.frontier_search", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="sampler seeds 0..N-1")
    parser.add_argument("--rounds", type=int, default=24, help="search rounds (trials per batch size)")
    parser.add_argument("--out", type=Path, default=RESULTS / "frontier_search.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if not TRIALS_FILE.exists():
        print(f"{TRIALS_FILE} is missing: measure the surrogate's trials first with `python -m bench.search --collect`.")
        return 2
    record = json.loads(TRIALS_FILE.read_text())
    surrogate = Surrogate(record)
    sizes = frontier_spec(BASELINE, 0).search_space.batch_sizes()
    minima = {b: surrogate.minimum([b]) for b in sizes}
    bars = {b: m * (1 + WITHIN) for b, m in minima.items()}
    results: dict[Way, list[dict[int, int]]] = {w: [] for w in WAYS}
    seconds = dict.fromkeys(WAYS, 0.0)
    for seed in range(args.seeds):
        for way in WAYS:
            started = time.perf_counter()
            results[way].append(rounds_to_reach(way, seed, args.rounds, surrogate, bars))
            seconds[way] += (time.perf_counter() - started) / args.seeds
        print(f"seed {seed}: " + "  ".join(f"{w.name}: {sorted(results[w][-1].values())}" for w in WAYS), flush=True)
    return publish(args.out, markdown(results, seconds, surrogate, minima, record, args))


if __name__ == "__main__":
    raise SystemExit(main())
