"""Batches straight from tensors on the device, augmented a whole batch at a time.

As in airbench: the data set lives on the device as uint8, each batch is gathered by index,
converted once and augmented (flip, reflect-padded random crop) with tensor ops, so the
training loop never runs per-image Python and never copies data between host and device.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F

from search.config.spec import StudySpec
from search.data.images import ImageData
from search.data.split import stratified_split
from search.errors import UserError

Batch = tuple[torch.Tensor, torch.Tensor]


class Normalizer:
    """uint8 images -> normalized float images with the training split's channel statistics."""

    def __init__(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:
        # Exact statistics from a 256-bin histogram per channel: no float copy of the data set
        # (the float64 pass this replaces took seconds and a gigabyte on CIFAR-10).
        counts = torch.zeros(images.shape[1], 256, dtype=torch.int64, device=images.device)
        for chunk in images.split(4096):
            for channel, pixels in enumerate(chunk.transpose(0, 1)):
                counts[channel] += pixels.flatten().bincount(minlength=256)
        frequencies = counts.cpu().double() / counts[0].sum().item()
        levels = torch.arange(256, dtype=torch.float64)
        mean = frequencies @ levels
        std = (frequencies @ levels.square() - mean.square()).clamp_min(1e-12).sqrt()
        self.mean = mean.to(dtype).view(1, -1, 1, 1).to(images.device)
        self.scale = (1 / std).to(dtype).view(1, -1, 1, 1).to(images.device)
        self.dtype = dtype

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(self.dtype) - self.mean) * self.scale


def flip_and_crop(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random crop from a reflect-padded batch."""
    n, _, h, w = images.shape
    device = images.device
    flip = torch.rand(n, device=device, generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
    if pad == 0:
        return images
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (2, n), device=device, generator=generator)
    # A view of every (2p+1)^2 crop of every image; picking one per image copies only the crops
    # (a third faster than gathering with full-size index tensors on the CPU).
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    return windows[torch.arange(n, device=device), :, offsets[0], offsets[1]]


class TrainBatches:
    """An endless stream of shuffled, augmented batches of exactly `batch_size` examples.

    Consecutive epochs are chained, so any batch size (even one larger than the data set)
    gets full batches and no example is dropped at epoch ends.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        normalize: Normalizer,
        seed: int,
        crop_pad: int,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.normalize = normalize
        self.crop_pad = crop_pad
        self.memory_format = memory_format
        # Two streams: the example order depends on the seed alone, so that runs with the same seed
        # see the same examples in the same order whatever their batch size (paired comparisons).
        self.order = torch.Generator(device=images.device).manual_seed(seed)
        self.augment = torch.Generator(device=images.device).manual_seed(seed ^ 0x5EED_5EED)

    def __iter__(self) -> Iterator[Batch]:
        order = torch.empty(0, dtype=torch.long, device=self.images.device)
        while True:
            while len(order) < self.batch_size:
                fresh = torch.randperm(len(self.images), device=self.images.device, generator=self.order)
                order = torch.cat([order, fresh])
            index, order = order[: self.batch_size], order[self.batch_size :]
            images = flip_and_crop(self.normalize(self.images[index]), self.crop_pad, self.augment)
            yield images.contiguous(memory_format=self.memory_format), self.labels[index]


class EvalBatches:
    """Fixed-order, unaugmented batches over a whole split."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        normalize: Normalizer,
        batch_size: int = 1024,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.images, self.labels = images, labels
        self.normalize = normalize
        self.batch_size = batch_size
        self.memory_format = memory_format

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self.images), self.batch_size):
            images = self.normalize(self.images[start : start + self.batch_size])
            yield images.contiguous(memory_format=self.memory_format), self.labels[start : start + self.batch_size]


class DeviceData:
    """One worker's images: the train/validation split on its device, ready for every trial."""

    def __init__(self, images: ImageData, train_index: torch.Tensor, val_index: torch.Tensor, device: torch.device) -> None:
        self.images = images
        self.train_images = images.train_images[train_index].to(device)
        self.train_labels = images.train_labels[train_index].to(device)
        self.val_images = images.train_images[val_index].to(device)
        self.val_labels = images.train_labels[val_index].to(device)
        self.num_classes = images.num_classes
        self.normalize = Normalizer(self.train_images)
        self.device = device
        # Pad by an eighth of the image side: 4 pixels on 32x32 CIFAR, as is standard.
        self.crop_pad = max(1, self.train_images.shape[-1] // 8)
        # Convolutions on a GPU run faster on NHWC tensors; on the CPU the gain is not reliable.
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    @property
    def train_size(self) -> int:
        return len(self.train_labels)

    @property
    def val_size(self) -> int:
        return len(self.val_labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.images.image_shape

    @property
    def fingerprint(self) -> str:
        return self.images.fingerprint

    def describe(self) -> str:
        return (
            f"{self.images.source}: {self.train_size:,} train / {self.val_size:,} validation images, {self.num_classes} classes, "
            f"{'x'.join(map(str, self.image_shape))}"
        )

    def for_final_evaluation(self) -> DeviceData:
        """Every training image (validation included) to train on, the test split in place of validation."""
        images = self.images
        n_train, n_test = len(images.train_labels), len(images.test_labels)
        if n_test == 0:
            raise UserError(
                f"{images.source} has no test split, so there is nothing held out to evaluate on. An image-folder data set "
                f"needs test/<class>/ folders next to train/<class>/."
            )
        merged = replace(images, train_images=torch.cat([images.train_images, images.test_images]), train_labels=torch.cat([images.train_labels, images.test_labels]))
        return DeviceData(merged, torch.arange(n_train), torch.arange(n_train, n_train + n_test), self.device)

    def train_batches(self, batch_size: int, seed: int) -> TrainBatches:
        return TrainBatches(self.train_images, self.train_labels, batch_size, self.normalize, seed, self.crop_pad, self.memory_format)

    def val_batches(self) -> EvalBatches:
        return EvalBatches(self.val_images, self.val_labels, self.normalize, memory_format=self.memory_format)

    def fixed_subset(self, examples: int, seed: int) -> Batch:
        """The same `examples` training images for every trial (seeded), normalized, not augmented."""
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(self.train_size, generator=generator)[:examples].to(self.device)
        images = self.normalize(self.train_images[index]).contiguous(memory_format=self.memory_format)
        return images, self.train_labels[index]


def device_data(spec: StudySpec, images: ImageData, device: torch.device) -> DeviceData:
    assert spec.dataset is not None
    train_index, val_index = stratified_split(images.train_labels, spec.dataset.val_size, spec.dataset.split_seed)
    return DeviceData(images, train_index, val_index, device)
