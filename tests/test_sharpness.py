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

from search.measure.sharpness import TooSlow, subset_loss, top_hessian_eigenvalue
from search.train.loss import Loss
from search.train.step import TrainingStep
from tests.conftest import REPO, run_cli


def test_quadratic_with_known_spectrum() -> None:
    curvatures = torch.tensor([5.0, 2.0, 1.0, 0.5])
    x = torch.ones(4, requires_grad=True)
    top = top_hessian_eigenvalue(0.5 * (curvatures * x * x).sum(), [x], iterations=60)
    assert top.value == pytest.approx(5.0, rel=1e-6)
    assert top.iterations == 60 and top.last_change < 1e-6


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

    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat))
    exact = float(eigenvalues[eigenvalues.abs().argmax()])
    top = top_hessian_eigenvalue(F.cross_entropy(model(inputs), labels), list(model.parameters()), iterations=300)
    assert top.value == pytest.approx(exact, rel=1e-3)


def test_time_limit_stops_the_iteration() -> None:
    x = torch.ones(3, requires_grad=True)
    with pytest.raises(TooSlow, match="stopped after 1 of 5"):
        top_hessian_eigenvalue((x**4).sum(), [x], iterations=5, time_limit=0.0)


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


def test_completed_trials_carry_sharpness_and_gap(study_file: Callable[..., Path], tmp_path: Path) -> None:
    # A generous limit: these trials train for well under a second, so 5% would skip the Hessian.
    done = _trials(study_file, tmp_path, {"examples": 32, "iterations": 5, "loss_examples": 64, "max_fraction": 100.0})
    assert len(done) == 2
    for trial in done:
        attrs = trial.user_attrs
        assert math.isfinite(attrs["sharpness"]) and attrs["sharpness"] > 0
        assert attrs["generalization_gap"] == pytest.approx(attrs["final_val_loss"] - attrs["train_subset_loss"])
        assert 0 < attrs["diagnostics_seconds"] and "diagnostics_skipped" not in attrs


def test_diagnostics_can_be_off(study_file: Callable[..., Path], tmp_path: Path) -> None:
    done = _trials(study_file, tmp_path, {"enabled": False})
    assert done and not any("sharpness" in t.user_attrs or "generalization_gap" in t.user_attrs for t in done)
