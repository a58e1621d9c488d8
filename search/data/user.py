"""The user's own data: a LightningDataModule, or a callable returning {"train": Dataset,
"val": Dataset[, "test": Dataset]}.

Whatever the source, a trial draws exactly `batch_size` examples per step in a seeded order,
epochs chained end to end (a short last batch is dropped, never trained), so the budget's
semantics (steps = budget // B, validation at equal examples seen) hold as for the built-in
images. Datasets whose tensors fit comfortably in memory are collated once and moved to the
device, as the built-in images are; larger ones stream through a DataLoader with workers. A
DataModule keeps its own loaders: the service sets its `batch_size` attribute before `setup`
and before each trial's `train_dataloader()` (as Lightning's batch-size tuner does).
"""
from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler

from search.config.classpath import exit_error, instantiate
from search.config.spec import StudySpec
from search.data.slicing import Batch, batch_length, tensors_of, to_device
from search.errors import UserError

# Collated data sets up to this size (and a quarter of the free memory) are held on the device.
IN_MEMORY_BYTES = 2 * 2**30
EVAL_BATCH = 1024
LOADER_WORKERS = min(4, len(os.sched_getaffinity(0)) - 1)


def _sized(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


class _NotTensors(Exception):
    """An example holds something other than tensors and numbers: it cannot be collated once."""


def _leaves(batch: Batch) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [leaf for value in batch.values() for leaf in _leaves(value)]
    if isinstance(batch, (tuple, list)):
        return [leaf for value in batch for leaf in _leaves(value)]
    raise _NotTensors


def _to_memory(dataset: Dataset) -> Batch | None:
    """The whole data set as one batch of tensors, or None when it is too big or not all tensors."""
    size = _sized(dataset)
    if not size:
        return None
    try:
        leaves = _leaves(torch.utils.data.default_collate([dataset[0]]))
    except (_NotTensors, TypeError):
        return None
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if not leaves or sum(t.numel() * t.element_size() for t in leaves) * size > min(IN_MEMORY_BYTES, free / 4):
        return None
    return _concat(list(DataLoader(dataset, batch_size=EVAL_BATCH, num_workers=0)))


def _concat(batches: list[Batch]) -> Batch:
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(batches)
    if isinstance(first, Mapping):
        return {key: _concat([b[key] for b in batches]) for key in first}
    return type(first)(_concat([b[i] for b in batches]) for i in range(len(first)))


def _index(batch: Batch, index: torch.Tensor) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch[index]
    if isinstance(batch, Mapping):
        return {key: _index(value, index) for key, value in batch.items()}
    return type(batch)(_index(value, index) for value in batch)


class _InMemory:
    """A collated split on the device: batches are gathered by index, no host round trip."""

    def __init__(self, batch: Batch, device: torch.device) -> None:
        self.batch = to_device(batch, device)
        self.device = device
        self.size = batch_length(batch)

    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        generator = torch.Generator(device=self.device).manual_seed(seed)
        order = torch.empty(0, dtype=torch.long, device=self.device)
        while True:
            while len(order) < batch_size:
                order = torch.cat([order, torch.randperm(self.size, device=self.device, generator=generator)])
            index, order = order[:batch_size], order[batch_size:]
            yield _index(self.batch, index)

    def in_order(self) -> Iterator[Batch]:
        for start in range(0, self.size, EVAL_BATCH):
            yield _index(self.batch, torch.arange(start, min(start + EVAL_BATCH, self.size), device=self.device))


class _Streamed:
    """A split too large for memory: a DataLoader with workers, epochs chained, short batches dropped."""

    def __init__(self, dataset: Dataset, device: torch.device) -> None:
        self.dataset = dataset
        self.device = device
        self.size = _sized(dataset) or 0

    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(
            self.dataset, batch_size=batch_size, sampler=RandomSampler(self.dataset, generator=generator), drop_last=True,
            num_workers=LOADER_WORKERS, pin_memory=self.device.type == "cuda", generator=generator,
        )
        if len(loader) == 0:
            raise UserError(f"The training set has {self.size} examples, fewer than one batch of {batch_size}: lower the batch sizes.")
        while True:
            for batch in loader:
                yield to_device(batch, self.device)

    def in_order(self) -> Iterator[Batch]:
        for batch in DataLoader(self.dataset, batch_size=EVAL_BATCH, num_workers=LOADER_WORKERS):
            yield to_device(batch, self.device)


def _split(dataset: Dataset, device: torch.device) -> _InMemory | _Streamed:
    collated = _to_memory(dataset)
    return _Streamed(dataset, device) if collated is None else _InMemory(collated, device)


class DatasetData:
    """Training and validation from the user's Datasets (and a test set for search.evaluate)."""

    memory_format = torch.contiguous_format
    num_classes = None

    def __init__(self, splits: Mapping[str, Dataset], device: torch.device, source: str) -> None:
        self.splits = splits
        self.device = device
        self.train = _split(splits["train"], device)
        self.val = _split(splits["val"], device)
        self.source = source

    @property
    def train_size(self) -> int:
        return self.train.size

    @property
    def val_size(self) -> int:
        return self.val.size

    @property
    def fingerprint(self) -> str | None:
        """A hash of the collated training and validation tensors; None for streamed data."""
        if not (isinstance(self.train, _InMemory) and isinstance(self.val, _InMemory)):
            return None
        digest = hashlib.sha256()
        for tensor in tensors_of(self.train.batch) + tensors_of(self.val.batch):
            digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:32]

    def describe(self) -> str:
        kind = "in memory" if isinstance(self.train, _InMemory) else f"streamed, {LOADER_WORKERS} loader workers"
        return f"{self.source}: {self.train_size:,} train / {self.val_size:,} validation examples ({kind})"

    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        return self.train.train_batches(batch_size, seed)

    def val_batches(self) -> Iterable[Batch]:
        return _Reiterable(self.val.in_order)

    def fixed_subset(self, examples: int, seed: int) -> Batch:
        """The same `examples` training examples for every trial (seeded; the Dataset's own transforms apply)."""
        return next(iter(self.train.train_batches(min(examples, self.train_size), seed)))

    def for_final_evaluation(self) -> DatasetData:
        """Train on train + val, measure on test (search.evaluate)."""
        if "test" not in self.splits:
            raise UserError(
                f"{self.source} returns no 'test' Dataset, and evaluation measures on the test split. Return "
                "{'train': ..., 'val': ..., 'test': ...} to evaluate."
            )
        merged = {"train": ConcatDataset([self.splits["train"], self.splits["val"]]), "val": self.splits["test"]}
        return DatasetData(merged, self.device, self.source)


class _Reiterable:
    def __init__(self, make: Any) -> None:
        self.make = make

    def __iter__(self) -> Iterator[Batch]:
        return self.make()


class DataModuleData:
    """A LightningDataModule's loaders, with the service's batch size and seeded order."""

    memory_format = torch.contiguous_format
    num_classes = None

    def __init__(self, module: pl.LightningDataModule, device: torch.device, source: str, stage: str = "fit") -> None:
        self.module = module
        self.device = device
        self.source = source
        self.stage = stage
        self._val = "val_dataloader" if stage == "fit" else "test_dataloader"

    def _loader(self, batch_size: int | None, method: str) -> DataLoader:
        if batch_size is not None:
            self.module.batch_size = batch_size  # type: ignore[attr-defined]
        return getattr(self.module, method)()

    @property
    def train_size(self) -> int:
        return _sized(self._loader(None, "train_dataloader").dataset) or 0

    @property
    def val_size(self) -> int:
        return sum(batch_length(b) for b in self._loader(None, self._val))

    fingerprint = None  # its loaders are the user's: the class path and init_args identify the data

    def describe(self) -> str:
        return f"{self.source} (LightningDataModule): {self.train_size:,} train examples, validation from its {self._val}()"

    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        loader = self._loader(batch_size, "train_dataloader")
        epoch = 0
        while True:
            # The loader's shuffling draws its seed from torch's global generator on the first batch:
            # seeding a forked generator makes the order a function of (seed, epoch) alone.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 100_003 + epoch)
                batches = iter(loader)
                first = next(batches, None)
            if first is None:
                raise UserError(f"{self.source}'s train_dataloader() yields no batch of {batch_size} examples.")
            served = 0
            for batch in itertools.chain([first], batches):
                if batch_length(batch) == batch_size:
                    served += 1
                    yield to_device(batch, self.device)
            if served == 0:
                raise UserError(
                    f"{self.source}'s train_dataloader() ignores the batch size the service sets: it never yields "
                    f"{batch_size} examples. Build its DataLoader with batch_size=self.batch_size."
                )
            epoch += 1

    def val_batches(self) -> Iterable[Batch]:
        return _Reiterable(lambda: (to_device(b, self.device) for b in self._loader(None, self._val)))

    def fixed_subset(self, examples: int, seed: int) -> Batch:
        return next(self.train_batches(min(examples, max(1, self.train_size)), seed))

    def for_final_evaluation(self) -> DataModuleData:
        """Train on its train_dataloader, measure on its test_dataloader (search.evaluate)."""
        if type(self.module).test_dataloader is pl.LightningDataModule.test_dataloader:
            raise UserError(f"{self.source} defines no test_dataloader(), and evaluation measures on the test split. Add one to evaluate.")
        self.module.setup("test")
        return DataModuleData(self.module, self.device, self.source, stage="test")


def load_user_data(spec: StudySpec, device: torch.device, smallest_batch: int) -> DatasetData | DataModuleData:
    """Build the user's data and check that it serves the service's batches."""
    assert spec.data is not None
    source = spec.data.class_path
    built = instantiate(spec.data, spec.code_dir, role="data")
    if isinstance(built, pl.LightningDataModule):
        try:
            built.batch_size = smallest_batch  # type: ignore[attr-defined]
        except AttributeError:
            raise UserError(
                f"The data `{source}` has a `batch_size` the service cannot set (a read-only property?). The service sets each "
                "trial's batch size on the DataModule, as Lightning's batch-size tuner does: make `batch_size` a plain attribute "
                "that train_dataloader() reads."
            ) from None
        try:
            built.prepare_data()
            built.setup("fit")
        except SystemExit as exited:
            raise exit_error(f"The data `{source}` (prepare_data/setup)", exited) from None
        except Exception as error:  # noqa: BLE001 - the user's code
            raise UserError(f"The data `{source}` failed in prepare_data/setup: {type(error).__name__}: {str(error)[:300]}.") from None
        data: DatasetData | DataModuleData = DataModuleData(built, device, source)
    elif isinstance(built, Mapping) and {"train", "val"} <= set(built) and all(isinstance(d, Dataset) for d in built.values()):
        data = DatasetData(built, device, source)
    else:
        raise UserError(
            f"The data `{source}` returned {type(built).__name__}; it must be a LightningDataModule, or a callable "
            "returning {'train': Dataset, 'val': Dataset} (and optionally 'test'). Fix data.class_path."
        )
    largest = max(spec.search_space.batch_sizes())
    if data.train_size < largest:
        raise UserError(
            f"The data `{source}` has {data.train_size} training examples, fewer than the largest batch size {largest}: "
            "lower the batch sizes in search_space."
        )
    # Serves the service's batch sizes: a DataModule that ignores `batch_size` says so here, naming one of
    # the study's sizes (two different sizes: a hard-coded loader cannot serve both).
    for batch_size in sorted({smallest_batch, largest}):
        next(data.train_batches(batch_size, seed=0))
    return data
