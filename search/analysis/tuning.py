"""How well each batch size was tuned: the expected best-of-k curve (Dodge et al. 2019, "Show your work").

Before batch sizes are compared, each one's search must have found its good configurations: a
batch size whose best is still falling as draws are added is under-tuned, and a comparison with it
says more about the search than about the batch size. For each batch size, from its N finished
search draws, the expected best validation loss over k draws (k = 1..N, drawn with replacement from
those N) is exact order statistics; its band is a bootstrap over the draws. A pruned draw counts with
the loss it was stopped at: higher than it would have reached, so the curve errs towards "not yet
tuned". A batch size is under-tuned when its expected best still improves by more than its seed
re-runs' 95% half-width over the last doubling of k (from N/2 to N draws).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from search.record import SEARCH, TrialRecord, batch_size_of
from search.stats import (
    MIN_DRAWS,
    best_of_k_weights,
    improvement_over_last_doubling,
    is_under_tuned,
)
from search.store.trials import draw_loss

BOOTSTRAP_REPLICATES = 400
BAND = (0.05, 0.95)


@dataclass(frozen=True)
class TuningCurve:
    batch_size: int
    draws: int  # finished search trials (completed or pruned)
    completed: int
    expected_best: list[float]  # k = 1..draws: the expected best validation loss over k draws
    band: list[tuple[float, float]]  # its bootstrap 90% band, per k
    improvement: float | None  # expected best at draws // 2 minus at draws (None: fewer than MIN_DRAWS draws)
    seed_half_width: float | None  # the seed re-runs' 95% half-width it is judged against
    converged: bool | None  # None: cannot tell (too few draws, or no seed interval)


def tuning_curves(trials: list[FrozenTrial], seed_half_widths: dict[int, float | None], seed: int = 0) -> list[TuningCurve]:
    """One curve per batch size, from its search draws (a joint study's trials all count as search draws)."""
    frontier = any(TrialRecord.of(t).frontier_role for t in trials)
    draws: dict[int, list[float]] = {}
    completed: dict[int, int] = {}
    for t in trials:
        size = batch_size_of(t)
        if size is None or (frontier and TrialRecord.of(t).frontier_role != SEARCH):
            continue
        loss = draw_loss(t)
        if loss is not None:
            draws.setdefault(size, []).append(loss)
            completed[size] = completed.get(size, 0) + (t.state == TrialState.COMPLETE)
    rng = np.random.default_rng(seed)
    curves = []
    for size in sorted(draws):
        values = np.asarray(draws[size])
        n = len(values)
        ks = range(1, n + 1)
        weights = np.array([best_of_k_weights(n, k) for k in ks]).T  # sorted draws @ weights: every k at once
        expected = (np.sort(values) @ weights).tolist()
        resampled = np.sort(rng.choice(values, size=(BOOTSTRAP_REPLICATES, n)), axis=1) @ weights
        low, high = np.quantile(resampled, BAND, axis=0)
        improvement = improvement_over_last_doubling(draws[size])
        half = seed_half_widths.get(size)
        under = is_under_tuned(improvement, half)
        converged = None if under is None else not under
        curves.append(TuningCurve(size, n, completed.get(size, 0), expected, list(zip(low.tolist(), high.tolist())), improvement, half, converged))
    return curves


def tuning_sentences(curves: list[TuningCurve]) -> list[str]:
    """How well each batch size was tuned, in words; the under-tuned ones named, since claims about them are weaker."""
    if not curves:
        return []
    under = [c for c in curves if c.converged is False]
    unknown = [c for c in curves if c.converged is None]
    lines = [
        "Tuning (expected best validation loss over k of each batch size's search draws, Dodge et al. 2019): "
        + ", ".join(f"{c.batch_size:,}: {c.expected_best[-1]:.4f} at k = {c.draws}" + (f" ({c.expected_best[c.draws // 2 - 1]:.4f} at k = {c.draws // 2})" if c.draws >= MIN_DRAWS else "") for c in curves)
        + "."
    ]
    if under:
        lines.append(
            "Under-tuned (its expected best still improves by more than its seed interval over the last doubling of draws): "
            + ", ".join(f"batch size {c.batch_size:,} (by {c.improvement:.4f}, seed half-width {c.seed_half_width:.4f})" for c in under)
            + ". Claims involving these batch sizes compare a search that had not settled; more search trials would (frontier.trials_per_batch_size, or frontier.until_converged)."
        )
    if unknown:
        lines.append(
            "Tuning not judged (fewer than 4 search draws, or no seed interval): batch sizes " + ", ".join(f"{c.batch_size:,}" for c in unknown) + "."
        )
    return lines
