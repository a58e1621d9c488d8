"""Data: every accepted source form, the stratified split, the cache, batch augmentation."""
from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch

from search.config.spec import DatasetSpec
from search.data.batches import Normalizer, TrainBatches, flip_and_crop
from search.data.images import load_dataset
from search.data.split import stratified_split
from search.errors import UserError
from tests.conftest import write_image_folder


def test_official_cifar_archive(cifar_python_archive: Path) -> None:
    data = load_dataset(DatasetSpec(name="cifar10", path=str(cifar_python_archive)))
    assert data.train_images.shape == (300, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (50, 3, 32, 32)
    assert data.classes == tuple(f"class{i}" for i in range(10))
    assert torch.equal(data.train_labels.bincount(), torch.full((10,), 30))


def test_official_cifar_extracted_folder(cifar_python_archive: Path, tmp_path: Path) -> None:
    with tarfile.open(cifar_python_archive) as tar:
        tar.extractall(tmp_path, filter="data")
    folder = load_dataset(DatasetSpec(name="cifar10", path=str(tmp_path)))
    archive = load_dataset(DatasetSpec(name="cifar10", path=str(cifar_python_archive)))
    assert torch.equal(folder.train_images, archive.train_images)


def test_image_folder_any_size_and_class_count(image_folder: Path, image_folder_tar: Path) -> None:
    folder = load_dataset(DatasetSpec(name="image_folder", path=str(image_folder)))
    assert folder.classes == ("kind_0", "kind_1", "kind_2")
    assert folder.train_images.shape == (120, 3, 24, 24) and folder.test_images.shape == (30, 3, 24, 24)
    archive = load_dataset(DatasetSpec(name="image_folder", path=str(image_folder_tar)))
    # PNG is lossless: the archive and the folder decode to the same pixels, in the same order.
    assert torch.equal(folder.train_images, archive.train_images)
    assert torch.equal(folder.train_labels, archive.train_labels)


def test_resize_to_image_size(image_folder: Path) -> None:
    data = load_dataset(DatasetSpec(name="image_folder", path=str(image_folder), image_size=16))
    assert data.image_shape == (3, 16, 16)


def test_warm_load_equals_cold_decode(image_folder: Path) -> None:
    spec = DatasetSpec(name="image_folder", path=str(image_folder))
    first, second = load_dataset(spec), load_dataset(spec)
    assert torch.equal(first.train_images, second.train_images)


def test_split_is_stratified_seeded_and_disjoint() -> None:
    labels = torch.arange(10).repeat_interleave(50)  # listed class by class, like an image folder
    train, val = stratified_split(labels, 100, seed=0)
    assert len(val) == 100 and len(train) == 400
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert torch.equal(labels[val].bincount(), torch.full((10,), 10))
    again, _ = stratified_split(labels, 100, seed=0)
    other, _ = stratified_split(labels, 100, seed=1)
    assert torch.equal(train, again) and not torch.equal(train, other)
    _, fraction = stratified_split(labels, 0.2, seed=0)
    assert len(fraction) == 100


def _write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "missing", "not found"),
        (lambda tmp: _write(tmp / "broken.tar.gz", b"\x1f\x8b\x08garbage"), "truncated or corrupt"),
        (lambda tmp: _write(tmp / "notes" / "train" / "a" / "x.txt", b"text").parents[2], "no images"),
        (lambda tmp: write_image_folder(tmp / "one", classes=1), "at least two"),
    ],
)
def test_bad_data_is_a_user_error(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match=message):
        load_dataset(DatasetSpec(name="image_folder", path=str(make(tmp_path))))


def test_truncated_archive_is_a_user_error(image_folder_tar: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(image_folder_tar.read_bytes()[: image_folder_tar.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_dataset(DatasetSpec(name="image_folder", path=str(truncated)))


def test_mixed_sizes_ask_for_image_size(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "mixed", size=24)
    write_image_folder(tmp_path / "other", size=20)
    (tmp_path / "other" / "train" / "kind_0" / "0000.png").rename(tmp_path / "mixed" / "train" / "kind_0" / "odd.png")
    with pytest.raises(UserError, match="image_size"):
        load_dataset(DatasetSpec(name="image_folder", path=str(tmp_path / "mixed")))


def test_crop_moves_pixels_without_inventing_them() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    out = flip_and_crop(images, pad=0, generator=generator)
    for original, flipped in zip(images, out):
        assert torch.equal(flipped, original) or torch.equal(flipped, original.flip(2))
    cropped = flip_and_crop(images, pad=2, generator=generator)
    assert cropped.shape == images.shape
    assert set(cropped[0].unique().tolist()) <= set(images[0].unique().tolist())


def test_train_batches_are_full_and_cover_every_example() -> None:
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 8, 8).contiguous()
    labels = torch.arange(10)
    normalize = Normalizer(images)
    stream = iter(TrainBatches(images, labels, batch_size=4, normalize=normalize, seed=0, crop_pad=1))
    seen = torch.cat([next(stream)[1] for _ in range(5)])  # 20 labels = exactly two epochs
    assert torch.equal(seen.bincount(minlength=10), torch.full((10,), 2))
    big = iter(TrainBatches(images, labels, batch_size=32, normalize=normalize, seed=0, crop_pad=1))
    assert next(big)[0].shape == (32, 3, 8, 8)  # larger than the data set: epochs are chained


def test_normalizer_centres_channels() -> None:
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = Normalizer(images)(images)
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (out.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
