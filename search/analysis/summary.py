"""The plain-language summary: "what difference does batch size make here?" from the numbers of the other modules."""
from __future__ import annotations

from optuna.trial import FrozenTrial

from search.analysis.evaluation import EvaluationResult, mean_spread_text
from search.analysis.per_batch_size import (
    NEAR_BEST,
    WELL_EXPLORED,
    BatchSizeResult,
    near_best,
)
from search.analysis.pruning import PruningSavings
from search.analysis.scaling import (
    FIT_WITHIN,
    UNCERTAIN_EXPONENT,
    ScalingFit,
    fitted_sizes,
    scaling_words,
)
from search.analysis.wording import percent_text, sizes_text
from search.store.trials import is_completed


def _range_text(near: list[int], measured: list[int]) -> str:
    """"batch sizes 64 to 256" when contiguous among the measured ones, else a list."""
    positions = [measured.index(b) for b in near]
    if positions == list(range(positions[0], positions[-1] + 1)):
        return f"batch sizes {near[0]:,} to {near[-1]:,}"
    return f"batch sizes {sizes_text(near)} (not contiguous: the ones in between did worse)"


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


def summary_lines(
    trials: list[FrozenTrial],
    results: list[BatchSizeResult],
    fits: tuple[ScalingFit | None, ScalingFit | None],
    savings: PruningSavings,
    evaluation: list[EvaluationResult],
) -> list[str]:
    """A few sentences answering "what difference does batch size make here?" from these numbers."""
    done = [t for t in trials if is_completed(t)]
    measured = [r for r in results if r.best is not None]
    lines = []
    if not measured:
        return ["No trial has completed yet, so the study cannot say anything about batch size."]
    best = min(measured, key=lambda r: r.best_loss)  # type: ignore[arg-type, return-value]
    if len(measured) == 1:
        lines.append(
            f"Only batch size {best.batch_size:,} has a completed trial ({len(done)} completed of {len(trials)}), so the "
            f"study cannot yet say what difference batch size makes. Run more trials."
        )
    else:
        near = near_best(results)
        sizes = [r.batch_size for r in measured]
        if len(near) == 1:
            within = f"no other batch size comes within {NEAR_BEST:.0%} of it"
        else:
            within = f"{_range_text(near, sizes)} come within {NEAR_BEST:.0%} of it"
        lines.append(
            f"The lowest validation loss, {best.best_loss:.4f}, was reached at batch size {best.batch_size:,}; {within}."
        )
        below = [r for r in reversed(measured) if r.batch_size < near[0]]
        above = [r for r in measured if r.batch_size > near[-1]]
        where = "that range" if len(near) > 1 else "it"
        for label, side in ((f"Below {where}", below), (f"Above {where}", above)):
            if side:
                rises = ", ".join(f"{percent_text(r.best_loss / best.best_loss - 1)} at {r.batch_size:,}" for r in side)  # type: ignore[operator]
                lines.append(f"{label} the best loss rises: {rises}.")
        fitted = fitted_sizes(results)
        left_out = [r for r in measured if r not in fitted]
        lines.append(scaling_words(fits[0], fitted))
        if left_out:
            lines.append(
                "Left out of that fit, as more than "
                f"{FIT_WITHIN:.0%} worse than the best loss (a poor optimum says little about the best learning rate): "
                + ", ".join(f"batch size {r.batch_size:,} ({percent_text(r.best_loss / best.best_loss - 1)})" for r in left_out)  # type: ignore[operator]
                + "."
            )
        if fits[0] is not None and fits[0].stderr is not None and fits[0].stderr <= UNCERTAIN_EXPONENT and fits[1] is not None:
            lines.append(
                f"Counting momentum (lr / (1 - momentum), the long-run step of momentum SGD), the exponent is {fits[1].exponent:.2f}."
            )
    thin = [r.batch_size for r in measured if r.completed < WELL_EXPLORED]
    if thin:
        which = f"Batch sizes {sizes_text(thin)} have" if len(thin) > 1 else f"Batch size {thin[0]:,} has"
        lines.append(
            f"{which} fewer than {WELL_EXPLORED} completed trials: the best loss there is one or two draws of learning rate "
            f"and momentum, an upper bound on what that batch size can reach, and its best learning rate is noisy."
        )
    missing = [r for r in results if r.best is None]
    if missing:
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
