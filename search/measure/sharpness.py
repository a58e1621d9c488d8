"""Sharpness and generalization gap of a trained network (Keskar et al. 2016, arXiv 1609.04836).

Large batches are said to end in sharper minima that generalize worse. Both halves of that
claim are measured here, on the final weights of a trial:

* sharpness: the largest Hessian eigenvalue of the training loss over a fixed training subset
  (`examples` images, 1,024 by default: over 128 the top eigenvalue of the subset's Hessian reads
  high by a model-dependent amount), by Lanczos iteration on Hessian-vector products until the
  estimate's relative change and its residual bound are both below `tolerance` (or `max_iterations`).
  Power iteration with a fixed count is not used: with lambda_2/lambda_1 = 0.95 it stalls 5% low while
  its change per step looks converged;
* what sharpness means for the optimizer: the learning-rate-relative sharpness, peak lr x lambda_max
  over the stability threshold of SGD with momentum m (2(1+m), Nesterov 2(1+m)/(1+2m)); near or
  above 1 the run trained at the edge of stability (Cohen et al. 2021). Raw sharpness is not
  comparable between batch sizes: with batch norm the loss is unchanged when conv weights are
  scaled by c while the Hessian scales by 1/c^2, and the weight norm itself moves with the batch
  size and learning rate; `weight_norm` is stored beside it;
* generalization gap: validation loss minus the loss on a fixed training subset.

The network is in eval mode throughout: batch norm then uses its running statistics, so the
loss is the function the trained network computes (the one validation measures), and the
measurement changes nothing in the model. The loss is the training step's (the study's loss, or a
LightningModule's training_step) in float32, without the weight decay term (which would add the
decay, 5e-4, to every eigenvalue).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch

from search.config.spec import DiagnosticsSpec, OptimizerSpec
from search.data.slicing import Batch, batch_length, split_batch
from search.data.source import TrialData
from search.train.step import TrainingStep

MatVec = Callable[[torch.Tensor], torch.Tensor]


class TooSlow(Exception):
    """The iteration would overrun its time limit; raised after the first iteration."""


@dataclass(frozen=True)
class Eigenvalue:
    value: float  # the largest Ritz value
    iterations: int  # matrix-vector products
    rel_change: float  # |change of the estimate in the last iteration| / |estimate|
    # |H y - value y| / |value| for its Ritz vector y: the relative distance from `value` to an eigenvalue is at most this.
    residual: float

    def converged(self, tolerance: float) -> bool:
        return self.rel_change < tolerance and self.residual < tolerance


def top_eigenvalue(
    matvec: MatVec, size: int, tolerance: float, max_iterations: int, *, seed: int = 0,
    time_limit: float = math.inf, device: torch.device | None = None,
) -> Eigenvalue:
    """The largest eigenvalue of the symmetric operator `matvec` on vectors of `size`, by Lanczos.

    Full reorthogonalization (twice, in the vectors' precision) keeps the basis orthogonal, so no
    spurious copies of the top eigenvalue appear; the tridiagonal problem is solved in float64.
    Stops when the estimate changed by less than `tolerance` (relative) and its residual bound is
    below it, when the Krylov space is exhausted, or after `max_iterations`. When the next
    iteration would end past `time_limit` seconds (judged by the last one), raises `TooSlow`.
    """
    started = time.perf_counter()
    generator = torch.Generator(device=device or "cpu").manual_seed(seed)
    start = torch.randn(size, generator=generator, device=device)
    basis = torch.empty(min(max_iterations, size), size, device=device)
    basis[0] = start / start.norm()
    alphas: list[float] = []
    betas: list[float] = []
    estimate = math.nan
    for k in range(basis.shape[0]):
        iteration_started = time.perf_counter()
        w = matvec(basis[k])
        alphas.append(float(basis[k] @ w))
        for _ in range(2):
            w = w - basis[: k + 1].T @ (basis[: k + 1] @ w)
        beta = float(w.norm())
        values, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas))
        previous, estimate = estimate, float(values[-1])
        scale = abs(estimate) or 1.0
        result = Eigenvalue(estimate, k + 1, abs(estimate - previous) / scale if k else math.inf, beta * abs(float(vectors[-1, -1])) / scale)
        exhausted = beta <= 1e-7 * scale or k + 1 == basis.shape[0]
        if result.converged(tolerance) or exhausted:
            return result
        now = time.perf_counter()
        if now - started + (now - iteration_started) > time_limit:
            raise TooSlow(f"stopped after {k + 1} Hessian-vector products ({now - started:.1f} s), not converged to {tolerance:g}")
        betas.append(beta)
        basis[k + 1] = w / beta
    raise AssertionError("unreachable: the loop returns at its last iteration")


def _tridiagonal(alphas: list[float], betas: list[float]) -> torch.Tensor:
    matrix = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        matrix += torch.diag(off, 1) + torch.diag(off, -1)
    return matrix


def hessian_operator(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> tuple[MatVec, int]:
    """Hessian-vector products of `loss` on flat vectors: the gradient graph is built once, and every
    product reuses it (one double backward pass each)."""
    gradient = torch.autograd.grad(loss, params, create_graph=True)
    sizes = [p.numel() for p in params]

    def matvec(vector: torch.Tensor) -> torch.Tensor:
        pieces = [piece.view_as(p) for piece, p in zip(vector.split(sizes), params)]
        products = torch.autograd.grad(gradient, params, grad_outputs=pieces, retain_graph=True, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if h is None else h).reshape(-1) for h, p in zip(products, params)])

    return matvec, sum(sizes)


def subset_loss(step: TrainingStep, batch: Batch, chunk: int = 1024) -> float:
    """Mean training loss of the model in eval mode over `batch`, computed in chunks."""
    step.model.eval()
    with torch.no_grad():
        total = sum(float(step.loss_of(piece)) * batch_length(piece) for piece in split_batch(batch, chunk))
    return total / batch_length(batch)


def sharpness(step: TrainingStep, batch: Batch, spec: DiagnosticsSpec, time_limit: float = math.inf) -> Eigenvalue:
    """The top Hessian eigenvalue of the eval-mode training loss over `batch`."""
    step.model.eval()
    params = [p for p in step.model.parameters() if p.requires_grad]
    matvec, size = hessian_operator(step.loss_of(batch), params)
    return top_eigenvalue(matvec, size, spec.tolerance, spec.max_iterations, seed=spec.seed, time_limit=time_limit, device=params[0].device)


def stability_threshold(momentum: float, nesterov: bool) -> float:
    """lr x curvature above which SGD with momentum diverges on a quadratic (PyTorch's form, no dampening)."""
    return 2 * (1 + momentum) / (1 + 2 * momentum) if nesterov else 2 * (1 + momentum)


def weight_norm(model: torch.nn.Module) -> float:
    """The L2 norm of all trainable parameters together."""
    return math.sqrt(math.fsum(float((p.detach().double() ** 2).sum()) for p in model.parameters() if p.requires_grad))


def diagnose(
    trained: TrainingStep, data: TrialData, val_loss: float, spec: DiagnosticsSpec, train_seconds: float,
    peak_lr: float, momentum: float, optimizer: OptimizerSpec,
) -> dict[str, Any]:
    """The trial attributes: sharpness and what it means at the trial's learning rate, weight norm,
    training-subset loss, generalization gap, their cost.

    The time limit is `spec.max_fraction` of the trial's training time; when the Hessian part
    would overrun it, the gap is still stored and `diagnostics_skipped` says why.
    """
    started = time.perf_counter()
    limit = spec.max_fraction * train_seconds
    model = trained.model.to(data.device)  # Lightning hands a GPU-trained model back on the CPU
    # Float32 throughout: Hessian-vector products in bf16 would be mostly rounding.
    step = TrainingStep(model, trained.loss, data.device, autocast=False)
    subset = data.fixed_subset(spec.loss_examples, spec.seed)
    train_loss = subset_loss(step, subset)
    attrs: dict[str, Any] = {"train_subset_loss": train_loss, "generalization_gap": val_loss - train_loss, "weight_norm": weight_norm(model)}
    # The Hessian subset is the head of the loss subset: the same images for every trial.
    head = split_batch(subset, spec.examples)[0]
    try:
        top = sharpness(step, head, spec, time_limit=limit - (time.perf_counter() - started))
        attrs.update(
            sharpness=top.value, sharpness_rel_change=top.rel_change, sharpness_residual=top.residual,
            sharpness_iterations=top.iterations, sharpness_examples=batch_length(head),
        )
        if optimizer.name == "sgd":  # AdamW's threshold depends on its preconditioner: not stated
            attrs["sharpness_lr_relative"] = peak_lr * top.value / stability_threshold(momentum, optimizer.nesterov)
    except TooSlow as error:
        attrs["diagnostics_skipped"] = f"{error}: the next would pass {spec.max_fraction:.0%} of the trial's {train_seconds:.1f} s of training"
    finally:
        model.zero_grad(set_to_none=True)
    attrs["diagnostics_seconds"] = time.perf_counter() - started
    return attrs
