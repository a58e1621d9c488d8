"""The frontier strategy: the trials it runs and the order it runs them in.

Every listed batch size gets `trials_per_batch_size` trials of its own learning-rate/momentum
search (`per_batch_size`), interleaved (one trial of each batch size, then the next round), so
a study stopped early has covered all of them evenly. Then each batch size's best configuration
is re-run with `seeds` seeds: re-runs, not the search's own best value, because a minimum over
draws is biased low (the winner's curse), and paired, because seed k gives every batch size the
same initial weights and example order, so differences between batch sizes are measured within
pairs (Shallue et al. 2018 tune each batch size separately for the same reason).

The queue is filled one trial at a time by the worker that holds the trial gate, so that the
order and the study-wide count stay exact with any number of workers and across resumes.

With `until_converged`, a batch size whose tuning curve has not settled once its seeds are back
(`search.stats.is_under_tuned`, the report's test) gets one more search trial at a time, up to its
cap; when one of them becomes the batch size's best, that configuration is re-run on the same seeds
and the earlier best's re-runs are superseded (`search.store.trials.without_superseded`).

Last, with `efficiency_curve`, the smallest batch size's best configuration is trained again on
shares of the budget (`efficiency_fractions`, E/32 ... E/2) with the same seeds: with its seed
re-runs (the whole budget) that is the data-efficiency curve L_small(E') through which
`search.analysis.critical` inverts the frontier into the critical batch size. Each trial trains its
own full schedule over its budget, and the learning rate is re-tuned at each share first: a sweep of
multiples of the full-budget best (`reference_lr_factors`) on one seed of its own, whose best is then
trained on the paired seeds (picked on one seed, measured on others). A curve left at the full
budget's learning rate is worse than it could be at short budgets, which biases B_crit up.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from search.config.spec import StudySpec
from search.record import (
    BATCH_SIZE,
    EFFICIENCY,
    LR,
    REFERENCE,
    SEARCH,
    SEED,
    SHARE_OF_BUDGET,
    TrialRecord,
    batch_size_of,
    is_finite,
)
from search.stats import improvement_over_last_doubling, is_under_tuned, mean_ci95
from search.store.trials import draw_loss

# A slot whose trials failed this often is given up (e.g. out of memory at that batch size).
MAX_ATTEMPTS = 2
_HELD = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Slot:
    number: int  # its place in the frontier's order
    role: Literal["search", "seed", "reference", "efficiency"]
    batch_size: int
    index: int  # search: the trial's index within its batch size; reference: its place in the sweep; seed, efficiency: the seed number
    fraction: float = 1.0  # of the example budget (reference, efficiency: less than 1)


def frontier_slots(spec: StudySpec) -> list[Slot]:
    """Every slot, in order: the search rounds, the seed rounds, the efficiency curve (its learning-rate
    sweeps, then its seed runs), then (with `until_converged`) the rounds of added search trials, which are
    taken only while a batch size is under-tuned."""
    sizes = spec.search_space.batch_sizes()
    frontier = spec.frontier
    rounds = [(SEARCH, i) for i in range(frontier.trials_per_batch_size)] + [(SEED, k) for k in range(frontier.seeds)]
    slots = [Slot(n, role, b, index) for n, ((role, index), b) in enumerate((r, b) for r in rounds for b in sizes)]  # type: ignore[arg-type]
    if spec.has_efficiency_curve():
        sweeps = [(REFERENCE, i, f) for f in frontier.efficiency_fractions for i in range(len(frontier.reference_sweep()))]
        runs = [(EFFICIENCY, k, f) for k in range(frontier.seeds) for f in frontier.efficiency_fractions]
        slots += [Slot(len(slots) + n, role, sizes[0], index, f) for n, (role, index, f) in enumerate(sweeps + runs)]  # type: ignore[arg-type]
    added = [(i, b) for i in range(spec.frontier.trials_per_batch_size, spec.frontier.search_cap()) for b in sizes]
    return slots + [Slot(len(slots) + n, SEARCH, b, i) for n, (i, b) in enumerate(added)]


def sweep_rates(spec: StudySpec, best: FrozenTrial) -> list[float | None]:
    """The learning rate of each sweep point around `best`, clipped to the searched range; None where
    clipping makes it repeat an earlier point's (that run would be a copy)."""
    space = spec.search_space.lr
    rates = [min(space.high, max(space.low, best.params[LR] * factor)) for factor in spec.frontier.reference_sweep()]
    return [None if rate in rates[:i] else rate for i, rate in enumerate(rates)]


def efficiency_budget(spec: StudySpec, fraction: float) -> int:
    """The example budget of an efficiency trial: `fraction` of the study's, in whole steps of the smallest batch size."""
    smallest = spec.search_space.batch_sizes()[0]
    return max(smallest, round(spec.budget_examples * fraction / smallest) * smallest)


def paired_seed(spec: StudySpec, role: str, index: int) -> int:
    """The training seed of a frontier trial: a function of its role and index only, not of its batch size
    (an efficiency trial trains with the seed re-run's seed of the same index). A sweep trains every learning
    rate on one seed of its own, so that its points differ by the rate only and its pick is measured on other seeds."""
    if role == REFERENCE:
        return int(np.random.SeedSequence([spec.sampler.seed, 2, 0]).generate_state(1)[0])
    return int(np.random.SeedSequence([spec.sampler.seed, role != SEARCH, index]).generate_state(1)[0])


def sweep_best(trials: list[FrozenTrial], fraction: float) -> FrozenTrial | None:
    """The completed sweep trial at `fraction` with the lowest final validation loss (trials: the current best's)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and is_finite(t.value)
            and TrialRecord.of(t).frontier_role == REFERENCE and TrialRecord.of(t).frontier_fraction == fraction]
    return min(done, key=lambda t: (t.value, t.number)) if done else None  # type: ignore[arg-type, return-value]


def best_search_trial(trials: list[FrozenTrial], batch_size: int) -> FrozenTrial | None:
    """The completed search trial of `batch_size` with the lowest final validation loss."""
    done = [
        t for t in trials
        if t.state == TrialState.COMPLETE and batch_size_of(t) == batch_size
        and TrialRecord.of(t).frontier_role == SEARCH and t.value is not None and t.value == t.value
    ]
    return min(done, key=lambda t: t.value) if done else None  # type: ignore[arg-type, return-value]


def queue_next(study: optuna.Study, spec: StudySpec) -> Literal["queued", "waiting", "done"]:
    """Queue the first free slot's trial (call under the trial gate).

    "waiting": the only free slots wait on trials still running on other workers (seed re-runs of
    a batch size whose search is running; with `until_converged`, a search trial or an efficiency
    run of a batch size whose tuning is not decided yet). "done": every slot is held, finished, given
    up or not needed.
    """
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return "queued"  # a retried or re-queued trial goes first
    by_slot: dict[int, list[FrozenTrial]] = defaultdict(list)
    for trial in trials:
        slot = TrialRecord.of(trial).frontier_slot
        if slot is not None:
            by_slot[slot].append(trial)
    bests = {b: best_search_trial(trials, b) for b in spec.search_space.batch_sizes()}

    def held(slot: Slot) -> list[FrozenTrial]:
        """The slot's trials; a re-run slot's only those of its batch size's current best."""
        if slot.role == SEARCH:
            return by_slot[slot.number]
        best = bests[slot.batch_size]
        return [t for t in by_slot[slot.number] if best is not None and TrialRecord.of(t).frontier_of == best.number]

    def given_up(slot: Slot) -> bool:
        retried = {TrialRecord.of(t).retry_of for t in held(slot)}  # an interrupted trial is run again, not given up
        return sum(t.state == TrialState.FAIL and t.number not in retried for t in held(slot)) >= MAX_ATTEMPTS

    def taken(slot: Slot) -> bool:
        return given_up(slot) or any(t.state in _HELD for t in held(slot))

    def settled(slot: Slot) -> bool:
        return given_up(slot) or any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in held(slot))

    slots = frontier_slots(spec)
    fixed = spec.frontier.trials_per_batch_size

    @functools.cache  # asked once per batch size and added slot: the answers hold for this call
    def searched(size: int) -> bool:
        """Every search trial of the batch size (the fixed ones and those added so far) has finished."""
        return all(settled(s) for s in slots if s.role == SEARCH and s.batch_size == size and (s.index < fixed or taken(s)))

    @functools.cache
    def tuning(size: int) -> Literal["converged", "under-tuned", "undecided"]:
        """"undecided" while its search or its best's seed re-runs are still running."""
        reruns = [s for s in slots if s.role == SEED and s.batch_size == size]
        if not searched(size) or not all(settled(s) for s in reruns):
            return "undecided"
        draws = [loss for t in trials if batch_size_of(t) == size and TrialRecord.of(t).frontier_role == SEARCH
                 and (loss := draw_loss(t)) is not None]
        seeds = [t.value for s in reruns for t in held(s) if t.state == TrialState.COMPLETE and t.value is not None]
        half = mean_ci95(seeds).half_width if seeds else None  # type: ignore[arg-type]
        return "under-tuned" if is_under_tuned(improvement_over_last_doubling(draws), half) else "converged"

    waiting = False
    for slot in slots:
        if taken(slot):
            continue
        fraction = slot.fraction if slot.role in SHARE_OF_BUDGET else None
        attrs = TrialRecord(frontier_role=slot.role, frontier_index=slot.index, frontier_slot=slot.number, frontier_fraction=fraction)
        if slot.role == SEARCH and slot.index >= fixed:  # added while the batch size is under-tuned
            state = tuning(slot.batch_size)
            waiting |= state == "undecided"
            if state != "under-tuned" or not searched(slot.batch_size):
                continue
        if slot.role == SEARCH:
            study.enqueue_trial({BATCH_SIZE: slot.batch_size}, user_attrs=attrs.attrs())
            return "queued"
        if not searched(slot.batch_size) or (slot.role in SHARE_OF_BUDGET and spec.frontier.until_converged and tuning(slot.batch_size) != "converged"
                                             and any(s.role == SEARCH and s.batch_size == slot.batch_size and not taken(s) for s in slots)):
            waiting = True
            continue
        best = bests[slot.batch_size]
        if best is None:
            continue  # no search trial of this batch size completed: nothing to re-run
        params = dict(best.params)
        rates = sweep_rates(spec, best)
        if slot.role == REFERENCE:
            if (rate := rates[slot.index]) is None:
                continue  # clipped onto an earlier point of the sweep
            params[LR] = rate
        elif slot.role == EFFICIENCY and spec.frontier.reference_sweep():
            sweep = [s for s in slots if s.role == REFERENCE and s.fraction == slot.fraction and rates[s.index] is not None]
            if not all(settled(s) for s in sweep):
                waiting = True
                continue
            picked = sweep_best([t for s in sweep for t in held(s)], slot.fraction)
            params[LR] = picked.params[LR] if picked is not None else params[LR]  # every sweep run failed: the full budget's
        study.enqueue_trial(params, user_attrs=replace(attrs, frontier_of=best.number).attrs())
        return "queued"
    return "waiting" if waiting else "done"
