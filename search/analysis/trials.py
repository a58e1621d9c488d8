"""The batch sizes of the search space, and "within x% of the best" (which trials count: `search.store.trials.is_completed`)."""
from __future__ import annotations

from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial

from search.record import BATCH_SIZE, batch_size_of


def batch_sizes(trials: list[FrozenTrial]) -> list[int]:
    """Every batch size of the search space (from the stored distribution), measured or not."""
    sizes = {size for t in trials if (size := batch_size_of(t)) is not None}
    for trial in trials:
        distribution = trial.distributions.get(BATCH_SIZE)
        if isinstance(distribution, CategoricalDistribution):
            sizes.update(int(choice) for choice in distribution.choices)  # type: ignore[arg-type]
    return sorted(sizes)


def loss_bound(best: float, fraction: float) -> float:
    """The loss `fraction` worse than `best`: what "within `fraction` of the best" allows (losses of either sign)."""
    return best + abs(best) * fraction
