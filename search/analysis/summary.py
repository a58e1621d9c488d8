"""The plain-language summary: "what difference does batch size make here?" from the numbers of the other modules."""
from __future__ import annotations

from optuna.trial import FrozenTrial

from search.analysis.evaluation import EvaluationResult, mean_spread_text
from search.analysis.frontier import exponent_words, with_interval
from search.analysis.per_batch_size import BatchSizeResult
from search.analysis.pruning import PruningSavings
from search.analysis.scaling import FIT_WITHIN, ScalingFit, fitted_sizes
from search.analysis.trials import loss_bound
from search.analysis.wording import percent_text, sizes_text
from search.record import batch_size_of
from search.store.trials import is_completed

# A joint study ranks batch sizes only when each has this many completed trials within this
# fraction of its own best: otherwise a best is one lucky draw of learning rate and momentum.
RANKABLE = 3
NEAR_OWN_BEST = 0.05


def _evaluation_words(top: EvaluationResult) -> str:
    seeds = f"over {top.seeds} seed{'s' if top.seeds > 1 else ''}"
    reaches = (
        f"accuracy {mean_spread_text(top.test_acc)} (mean ± standard deviation {seeds})" if top.test_acc
        else f"test loss {mean_spread_text(top.test_loss)} (mean ± standard deviation {seeds}; no accuracy: the loss is not a classification loss)"
    )
    return (
        f"On the held-out test set, the best configuration (trial {top.source_trial}, batch size {top.batch_size:,}), "
        f"retrained on the full training split, reaches {reaches}."
    )


def ranked(trials: list[FrozenTrial], measured: list[BatchSizeResult]) -> tuple[bool, list[int]]:
    """Whether a joint study may rank its batch sizes: each needs `RANKABLE` completed trials within
    `NEAR_OWN_BEST` of its own best, or its best is one lucky draw. Returns the verdict and the thin ones."""
    thin = []
    for result in measured:
        bound = loss_bound(result.best_loss, NEAR_OWN_BEST)  # type: ignore[arg-type]
        near = [t for t in trials if is_completed(t) and batch_size_of(t) == result.batch_size and t.value <= bound]  # type: ignore[operator]
        if len(near) < RANKABLE:
            thin.append(result.batch_size)
    return not thin, thin


def summary_lines(
    trials: list[FrozenTrial],
    results: list[BatchSizeResult],
    fits: tuple[ScalingFit | None, ScalingFit | None],
    savings: PruningSavings,
    evaluation: list[EvaluationResult],
    frontier: bool = False,
) -> list[str]:
    """A few sentences answering "what difference does batch size make here?" from these numbers.

    In a frontier study the comparison of batch sizes comes from `search.analysis.frontier` (paired
    seeds); here only what the search adds. In a joint study each batch size's best is the minimum over
    however many draws the sampler gave it: an upper bound, labelled so, and ranked only where every
    batch size compared has enough trials near its best. No "within x%" is stated: without seeds there
    is no interval for x to exceed."""
    done = [t for t in trials if is_completed(t)]
    measured = [r for r in results if r.best is not None]
    lines = []
    if not frontier and not measured:
        return ["No trial has completed yet, so the study cannot say anything about batch size."]
    if not frontier and len(measured) == 1:
        lines.append(
            f"Only batch size {measured[0].batch_size:,} has a completed trial ({len(done)} completed of {len(trials)}), so the "
            f"study cannot yet say what difference batch size makes. Run more trials."
        )
    elif not frontier:
        best = min(measured, key=lambda r: r.best_loss)  # type: ignore[arg-type, return-value]
        bounds = "; ".join(f"{r.batch_size:,}: {r.best_loss:.4f} (best of {r.completed})" for r in measured)
        lines.append(
            f"Best validation loss per batch size, each the minimum over the trials the joint search happened to draw there "
            f"(upper bounds on what a batch size can reach, not tuned optima): {bounds}."
        )
        can_rank, thin = ranked(trials, measured)
        if can_rank:
            lines.append(
                f"Every batch size has at least {RANKABLE} completed trials within {NEAR_OWN_BEST:.0%} of its own best, so the "
                f"ranking of these upper bounds is meaningful: the lowest is at batch size {best.batch_size:,}. It has no "
                f"interval: for a tested comparison, run the study with strategy: frontier (paired seeds per batch size)."
            )
        else:
            lines.append(
                f"Batch sizes are not ranked: {sizes_text(thin)} {'have' if len(thin) > 1 else 'has'} fewer than {RANKABLE} "
                f"completed trials within {NEAR_OWN_BEST:.0%} of {'their' if len(thin) > 1 else 'its'} own best, so those bests are "
                f"single draws. Run more trials, or strategy: frontier to tune and compare every batch size."
            )
        fitted = fitted_sizes(results)
        lines.append(exponent_words(with_interval(fits[0]), points=f"come within {FIT_WITHIN:.0%} of the best loss")
                     + " Fitted on best-of-N draws, not tuned optima.")
        left_out = [r for r in measured if r not in fitted]
        if left_out:
            lines.append(
                "Left out of that fit, as more than "
                f"{FIT_WITHIN:.0%} worse than the best loss (a poor optimum says little about the best learning rate): "
                + ", ".join(f"batch size {r.batch_size:,} ({percent_text(r.best_loss / best.best_loss - 1)})" for r in left_out)  # type: ignore[operator]
                + "."
            )
    missing = [r for r in results if r.best is None]
    if missing and not frontier:
        lines.append(
            "No trial completed at batch sizes "
            + ", ".join(f"{r.batch_size:,} ({r.sampled} sampled)" for r in missing)
            + ": nothing can be said about them."
        )
    if savings.finished:
        lines.append(
            f"Pruning stopped {savings.pruned} of {savings.finished} trials early: they trained {savings.examples_trained:,} "
            f"examples in all instead of {savings.examples_if_run_to_end:,} had every trial run to the end "
            f"({savings.saved_fraction:.0%} saved)."
        )
    if evaluation:
        lines.append(_evaluation_words(evaluation[0]))
    return lines
