"""A small MLP classifier on scikit-learn's breast-cancer data set (569 tumours, 30 features, 2 classes).

`splits` is the data: a callable returning {"train", "val", "test"} Datasets. The search trains on
"train", ranks trials on "val", and `python -m search.evaluate` retrains the best on train + val and
measures once on "test".
"""
from __future__ import annotations

import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import TensorDataset


class MLP(nn.Module):
    """Features in, one logit per class out: what `loss: cross_entropy` expects."""

    def __init__(self, inputs: int = 30, hidden: int = 64, classes: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def splits(seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> dict[str, TensorDataset]:
    """Stratified, seeded train/val/test split; features standardized with the training split's statistics only."""
    x, y = load_breast_cancer(return_X_y=True)
    rest_x, test_x, rest_y, test_y = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    train_x, val_x, train_y, val_y = train_test_split(
        rest_x, rest_y, test_size=val_fraction / (1 - test_fraction), stratify=rest_y, random_state=seed
    )
    mean, std = train_x.mean(0), train_x.std(0)

    def dataset(features, labels) -> TensorDataset:  # type: ignore[no-untyped-def]
        return TensorDataset(torch.tensor((features - mean) / std, dtype=torch.float32), torch.tensor(labels, dtype=torch.long))

    return {"train": dataset(train_x, train_y), "val": dataset(val_x, val_y), "test": dataset(test_x, test_y)}
