"""What a worker trains on, whatever the source: the one interface trials, measurements and
evaluation use, and the function that builds it from the study spec."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import torch

from search.config.spec import StudySpec
from search.data.batches import device_data
from search.data.images import ImageData, load_dataset
from search.data.slicing import Batch
from search.data.user import load_user_data


class TrialData(Protocol):
    """A train/validation split on one device.

    `train_batches` is endless: exactly `batch_size` examples per batch, in an order fixed by
    `seed`, epochs chained. `num_classes` is known for the built-in images (their models are
    built for it) and None for the user's data.
    """

    device: torch.device
    memory_format: torch.memory_format
    num_classes: int | None

    @property
    def train_size(self) -> int: ...

    @property
    def val_size(self) -> int: ...

    @property
    def fingerprint(self) -> str | None:
        """A hash of the data itself, or None where it cannot be had cheaply (streamed data)."""

    def describe(self) -> str: ...

    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]: ...

    def val_batches(self) -> Iterable[Batch]: ...

    def fixed_subset(self, examples: int, seed: int) -> Batch: ...

    def for_final_evaluation(self) -> TrialData: ...


def load_data(spec: StudySpec, device: torch.device, images: ImageData | None = None) -> TrialData:
    """The study's data on `device`: the built-in images (decoded or from the cache; `images`
    when already loaded) or the user's own `data`."""
    if spec.data is not None:
        return load_user_data(spec, device, min(spec.search_space.batch_sizes()))
    assert spec.dataset is not None
    return device_data(spec, images or load_dataset(spec.dataset), device)
