"""The noise-scale estimator against answers known in closed form."""
from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from search.measure.noise_scale import estimate, unbiased_estimates
from search.record import critical_range
from search.train.accumulation import ghost_groups, use_ghost_batch_norm
from search.train.loss import Loss, LossFn
from search.train.step import TrainingStep


def _step(model: nn.Module, loss_fn: LossFn) -> TrainingStep:
    """The service's training step around a toy model and loss."""
    return TrainingStep(model, Loss("toy", loss_fn), torch.device("cpu"))


def test_estimator_inverts_the_expected_norms_exactly() -> None:
    # E|G_B|^2 = |G|^2 + tr(Sigma) / B: fed the exact expectations, the estimator returns the exact terms.
    gradient_sq, trace = 0.25, 40.0
    expected = {b: gradient_sq + trace / b for b in (8, 128)}
    assert unbiased_estimates(expected[8], expected[128], 8, 128) == pytest.approx((gradient_sq, trace))


def _regression_batches(dim: int, w_star: torch.Tensor, noise: float, batch: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(batch, dim, generator=generator)
        yield x, x @ w_star + noise * torch.randn(batch, generator=generator)


def test_linear_regression_with_known_noise() -> None:
    """Loss 0.5 (x.w - y)^2, x ~ N(0, I_d), y = x.w* + N(0, s^2), at w = w* + delta.

    The per-example gradient is x (x.delta - eps), so G = delta and, by Isserlis' theorem,
    E[g g^T] = |delta|^2 I + 2 delta delta^T + s^2 I: tr(Sigma) = (d + 1)|delta|^2 + d s^2.
    """
    dim, noise = 10, 1.0
    w_star = torch.randn(dim, generator=torch.Generator().manual_seed(0))
    delta = torch.full((dim,), 0.5)  # |delta|^2 = 2.5
    model = nn.Linear(dim, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_((w_star + delta)[None])
    exact_gradient_sq = float(delta @ delta)
    exact_trace = (dim + 1) * exact_gradient_sq + dim * noise**2

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return 0.5 * (outputs.squeeze(1) - targets).square().mean()

    result = estimate(_step(model, loss_fn), _regression_batches(dim, w_star, noise, 64, seed=1), small_batch=8, measurements=600)
    assert (result.small_batch, result.big_batch, result.measurements) == (8, 64, 600)
    assert result.gradient_sq == pytest.approx(exact_gradient_sq, rel=0.1)
    assert result.trace == pytest.approx(exact_trace, rel=0.05)
    exact_b_simple = exact_trace / exact_gradient_sq  # 15
    assert 0 < result.stderr < 0.1 * exact_b_simple
    assert abs(result.b_simple - exact_b_simple) < 0.05 * exact_b_simple


def test_noise_swamping_the_signal_gives_no_ratio() -> None:
    # At the optimum G = 0: the |G|^2 estimate hovers around zero and B_simple is undefined half the time.
    dim = 4
    model = nn.Linear(dim, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return 0.5 * (outputs.squeeze(1) - targets).square().mean()

    result = estimate(_step(model, loss_fn), _regression_batches(dim, torch.zeros(dim), 1.0, 32, seed=2), small_batch=4, measurements=200)
    assert abs(result.gradient_sq) < 0.1 * result.trace / 4
    assert result.trace == pytest.approx(dim, rel=0.15)
    assert math.isnan(result.b_simple) or result.b_simple > 50


def test_big_batch_must_be_a_larger_multiple_of_the_small() -> None:
    model = nn.Linear(3, 1)
    batches = iter([(torch.randn(12, 3), torch.randn(12))])
    with pytest.raises(ValueError, match="multiple"):
        estimate(_step(model, lambda out, y: out.squeeze(1).sub(y).square().mean()), batches, small_batch=8, measurements=1)


def test_suggested_range_brackets_the_critical_batch_size() -> None:
    assert critical_range(512.0) == (64.0, 1024.0)


def _batch_norm_problem(seed: int) -> tuple[nn.Module, Iterator[tuple[torch.Tensor, torch.Tensor]], LossFn]:
    """A small regression MLP with batch norm, part-trained so that |G| is not dominated by the start."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 1))
    w_star = torch.randn(8, generator=torch.Generator().manual_seed(seed))

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return 0.5 * (outputs.squeeze(1) - targets).square().mean()

    return model, _regression_batches(8, w_star, 0.5, 256, seed=seed + 1), loss_fn


def _b_simple(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], loss_fn: LossFn, chunk: int) -> float:
    return estimate(_step(model, loss_fn), batches, small_batch=chunk, measurements=300).b_simple


@pytest.mark.slow
def test_under_ghost_groups_the_estimate_does_not_move_with_the_chunk_size() -> None:
    """With batch norm over fixed groups of 4 (the probe's normalization), chunks of 4, 16 and 64 agree within 10%;
    with each chunk normalizing itself, they do not (the unit of the estimator becomes the chunk)."""
    model, batches, loss_fn = _batch_norm_problem(0)
    ghost = use_ghost_batch_norm(model, 4).train()
    with ghost_groups(ghost, 4):
        grouped = [_b_simple(ghost, batches, loss_fn, chunk) for chunk in (4, 16, 64)]
    assert max(grouped) / min(grouped) < 1.10, grouped
    with ghost_groups(ghost, 10**9):  # each chunk normalizes itself
        per_chunk = [_b_simple(ghost, batches, loss_fn, chunk) for chunk in (4, 16, 64)]
    assert max(per_chunk) / min(per_chunk) > 1.2, per_chunk
