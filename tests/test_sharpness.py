"""Sharpness by power iteration against exact eigenvalues, and the diagnostics stored on real trials."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import optuna
import pytest
import torch
import torch.nn.functional as F
from optuna.trial import TrialState
from torch import nn
from torch.func import functional_call

from search.measure.sharpness import (
    Eigenvalue,
    TooSlow,
    hessian_operator,
    stability_threshold,
    subset_loss,
    top_eigenvalue,
)
from search.train.loss import Loss
from search.train.step import TrainingStep
from tests.conftest import REPO, run_cli


def _lanczos_on(loss: torch.Tensor, params: list[torch.Tensor], **kwargs: object) -> Eigenvalue:
    matvec, size = hessian_operator(loss, params)
    return top_eigenvalue(matvec, size, **kwargs)  # type: ignore[arg-type]


def test_quadratic_with_close_top_eigenvalues_converges_to_the_tolerance() -> None:
    # lambda_2 / lambda_1 = 0.95 and a long tail: power iteration stalls about 5% low here.
    curvatures = torch.cat([torch.tensor([1.0, 0.95]), torch.linspace(0.9, 0.01, 2000)])
    x = torch.ones(len(curvatures), requires_grad=True)
    top = _lanczos_on(0.5 * (curvatures * x * x).sum(), [x], tolerance=1e-3, max_iterations=200)
    assert top.converged(1e-3)
    assert abs(top.value - 1.0) < 1e-3
    assert top.iterations < 200


def test_power_iteration_would_have_read_low_on_that_quadratic() -> None:
    """The reason for Lanczos: ten power iterations from the same start read several percent low."""
    curvatures = torch.cat([torch.tensor([1.0, 0.95]), torch.linspace(0.9, 0.01, 2000)])
    vector = torch.randn(len(curvatures), generator=torch.Generator().manual_seed(0))
    for _ in range(10):
        estimate, vector = float(vector @ (curvatures * vector) / (vector @ vector)), curvatures * vector
    assert estimate < 0.97


def test_small_network_matches_the_exact_hessian() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    inputs, labels = torch.randn(40, 5), torch.randint(0, 3, (40,))
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss_of(vector: torch.Tensor) -> torch.Tensor:
        pieces = dict(zip(names, (piece.view(shape) for piece, shape in zip(vector.split([s.numel() for s in shapes]), shapes))))
        return F.cross_entropy(functional_call(model, pieces, (inputs,)), labels)

    exact = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat))[-1])
    top = _lanczos_on(F.cross_entropy(model(inputs), labels), list(model.parameters()), tolerance=1e-6, max_iterations=len(flat))
    assert top.value == pytest.approx(exact, rel=1e-4)


def test_time_limit_stops_the_iteration() -> None:
    x = torch.arange(1.0, 50.0, requires_grad=True)
    with pytest.raises(TooSlow, match="stopped after 1 Hessian-vector products"):
        _lanczos_on((x**4).sum(), [x], tolerance=1e-9, max_iterations=40, time_limit=0.0)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_stability_threshold_is_where_pytorch_sgd_starts_to_diverge(momentum: float, nesterov: bool) -> None:
    """On f(x) = x^2 / 2 (curvature 1), SGD with lr just under the threshold shrinks x, just over it grows x."""

    def final_size(lr: float) -> float:
        x = torch.ones(1, requires_grad=True)
        optimizer = torch.optim.SGD([x], lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
        for _ in range(300):
            optimizer.zero_grad()
            (0.5 * x * x).sum().backward()
            optimizer.step()
        return abs(float(x.detach()))

    threshold = stability_threshold(momentum, nesterov)
    assert final_size(threshold * 0.98) < 1 < final_size(threshold * 1.02)


def test_subset_loss_is_the_eval_mode_mean_cross_entropy() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).train()
    images, labels = torch.randn(50, 4), torch.randint(0, 3, (50,))
    loss = subset_loss(TrainingStep(model, Loss("cross_entropy", F.cross_entropy), torch.device("cpu")), (images, labels), chunk=16)
    assert not model.training
    with torch.no_grad():
        assert loss == pytest.approx(float(F.cross_entropy(model(images), labels)), rel=1e-6)


def _trials(study_file: Callable[..., Path], tmp_path: Path, diagnostics: dict[str, object]) -> list[optuna.trial.FrozenTrial]:
    path = study_file({"diagnostics": diagnostics, "pruner": {"name": "none", "args": {}}, "n_trials": 2})
    url = f"sqlite:///{tmp_path / 'diag.sqlite3'}"
    result = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", cwd=REPO)
    assert result.returncode == 0, result.stderr
    return optuna.load_study(study_name=path.stem, storage=url).get_trials(states=(TrialState.COMPLETE,))


@pytest.mark.slow
def test_completed_trials_carry_sharpness_and_gap(study_file: Callable[..., Path], tmp_path: Path) -> None:
    # A generous limit: these trials train for well under a second, so 5% would skip the Hessian.
    done = _trials(study_file, tmp_path, {"examples": 32, "max_iterations": 30, "loss_examples": 64, "max_fraction": 100.0})
    assert len(done) == 2
    for trial in done:
        attrs = trial.user_attrs
        assert math.isfinite(attrs["sharpness"]) and attrs["sharpness"] > 0
        assert attrs["generalization_gap"] == pytest.approx(attrs["final_val_loss"] - attrs["train_subset_loss"])
        assert 0 < attrs["diagnostics_seconds"] and "diagnostics_skipped" not in attrs
        assert attrs["sharpness_examples"] == 32 and 1 <= attrs["sharpness_iterations"] <= 30
        assert attrs["sharpness_rel_change"] >= 0 and attrs["weight_norm"] > 0
        threshold = stability_threshold(trial.params["momentum"], nesterov=True)
        assert attrs["sharpness_lr_relative"] == pytest.approx(attrs["effective_lr"] * attrs["sharpness"] / threshold)


@pytest.mark.slow
def test_diagnostics_can_be_off(study_file: Callable[..., Path], tmp_path: Path) -> None:
    done = _trials(study_file, tmp_path, {"enabled": False})
    assert done and not any("sharpness" in t.user_attrs or "generalization_gap" in t.user_attrs for t in done)
