"""A LightningModule regressor and a LightningDataModule on scikit-learn's diabetes data set
(442 patients, 10 features, a disease-progression score one year later)."""
from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Regressor(pl.LightningModule):
    """Its own loss in training_step; validation_step logs `val_loss`, which the search ranks trials by.

    No configure_optimizers: the search builds the optimizer (SGD with the sampled lr and momentum)
    and the learning-rate schedule itself.
    """

    def __init__(self, inputs: int = 10, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y), batch_size=len(y))  # averaged over examples


class DiabetesData(pl.LightningDataModule):
    """Seeded train/val/test split, features and target standardized with the training split's statistics.

    The search sets `batch_size` before `setup` and before each trial's `train_dataloader()`:
    build the training loader with `batch_size=self.batch_size`.
    """

    def __init__(self, batch_size: int = 32, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return  # every stage uses the same split
        x, y = load_diabetes(return_X_y=True)
        rest_x, test_x, rest_y, test_y = train_test_split(x, y, test_size=self.test_fraction, random_state=self.seed)
        train_x, val_x, train_y, val_y = train_test_split(
            rest_x, rest_y, test_size=self.val_fraction / (1 - self.test_fraction), random_state=self.seed
        )
        x_mean, x_std, y_mean, y_std = train_x.mean(0), train_x.std(0), train_y.mean(), train_y.std()

        def dataset(features, target) -> TensorDataset:  # type: ignore[no-untyped-def]
            return TensorDataset(
                torch.tensor((features - x_mean) / x_std, dtype=torch.float32), torch.tensor((target - y_mean) / y_std, dtype=torch.float32)
            )

        self.splits = {"train": dataset(train_x, train_y), "val": dataset(val_x, val_y), "test": dataset(test_x, test_y)}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=256)
