"""Data sets as uint8 tensors: decoded once (on all cores), cached, split, kept in memory.

Accepted sources (`dataset.path` or `--data`):
  * the official CIFAR-10 `cifar-10-python.tar.gz`, or the folder it extracts to;
  * an image-folder tree `train/<class>/*`, `test/<class>/*` (or just `<class>/*`),
    as a folder or a `.tar`/`.tar.gz` of one, with any number of classes and image size;
  * nothing, for `cifar10`: the official archive is downloaded (checksum verified);
  * `synthetic`: a generated, learnable data set for smoke runs and tests.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from search.config.spec import DatasetSpec
from search.errors import Interrupted, UserError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_CACHE_FORMAT = 1
# The cache holds one .npy file per array: uint8 images (N, C, H, W) and int64 labels per split.
CACHE_ARRAYS = ("train_x", "train_y", "test_x", "test_y")

DATA_FORMS = (
    "--data accepts: the official CIFAR-10 archive cifar-10-python.tar.gz or the folder it extracts to; "
    "an image-folder tree train/<class>/*.jpg (and test/<class>/*.jpg) as a folder, .tar or .tar.gz; "
    "or a folder of <class>/* images."
)


@dataclass(frozen=True)
class ImageData:
    """A whole data set in memory: uint8 images (N, C, H, W) and int64 labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    source: str
    # A hash of the images, labels and class names: the same data wherever it lies, so a moved
    # copy resumes a study and different data never does.
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]


def cache_dir() -> Path:
    return Path(os.environ.get("SEARCH_CACHE_DIR", Path.home() / ".cache" / "batch-size-search"))


def load_dataset(spec: DatasetSpec) -> ImageData:
    """Load (decoding on first use, then from the cache) and check a data set."""
    if spec.name == "synthetic":
        return _synthetic(spec)
    source = Path(spec.path).expanduser() if spec.path else _download_cifar10()
    if not source.exists():
        raise UserError(f"Data not found at {source}. {DATA_FORMS}")
    if not (source.is_file() or source.is_dir()):
        # A device or a pipe (/dev/zero, a FIFO) would be read without end before its format is known.
        raise UserError(f"The data at {source} is neither a regular file nor a folder (a device or a pipe?). {DATA_FORMS}")
    data = _cached(source, spec.image_size)
    _check(data)
    return data




def _check(data: ImageData) -> None:
    if data.num_classes < 2:
        raise UserError(
            f"{data.source} has {data.num_classes} class(es) ({', '.join(data.classes) or 'none'}); "
            "a classifier needs at least two class folders with images."
        )
    if len(data.train_images) == 0:
        raise UserError(f"{data.source} has no training images. {DATA_FORMS}")


def _cache_key(source: Path, image_size: int | None) -> str:
    stat = source.stat()
    identity = json.dumps([str(source.resolve()), stat.st_size, stat.st_mtime_ns, image_size, _CACHE_FORMAT])
    return hashlib.sha1(identity.encode()).hexdigest()[:16]


def _read_cache(entry: Path) -> tuple[dict[str, np.ndarray], list[str], str] | None:
    """A cache entry's arrays, classes and fingerprint; None (and the entry removed) when it is damaged, so it is rebuilt."""
    if not (entry / "meta.json").exists():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        classes = list(meta["classes"])
        arrays = {name: np.load(entry / f"{name}.npy", allow_pickle=False) for name in CACHE_ARRAYS}
        if len({len(arrays[name]) for name in CACHE_ARRAYS if name.startswith("train")}) != 1:
            raise ValueError("train arrays of different lengths")
        stored = meta.get("fingerprint")
        fingerprint = fingerprint_arrays(arrays, classes)
        if stored is not None and stored != fingerprint:
            raise ValueError("fingerprint mismatch")
    except (OSError, ValueError, KeyError, TypeError, EOFError) as damage:
        print(f"the cached copy in {entry} is damaged ({type(damage).__name__}: {str(damage)[:100]}); decoding again", file=sys.stderr, flush=True)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return arrays, classes, fingerprint


def _cache_root() -> Path:
    """The cache folder, created if needed; one that cannot be is the user's to point elsewhere."""
    root = cache_dir() / "decoded"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"Cannot use the data cache folder {root}: {error.strerror or error}. Point SEARCH_CACHE_DIR at a writable folder "
            "(it holds decoded images, so later runs skip decoding)."
        ) from None
    return root


def _cached(source: Path, image_size: int | None) -> ImageData:
    """Decode once; later loads read plain .npy files (well under a second for CIFAR-10)."""
    entry = _cache_root() / _cache_key(source, image_size)
    cached = _read_cache(entry)
    if cached is not None:
        arrays, classes, fingerprint = cached
    else:
        try:
            with _signals_raise():
                arrays, classes = _decode(source, image_size)
        except _Signalled as signalled:
            raise Interrupted(signalled.number, f"decoding {source}") from None
        fingerprint = fingerprint_arrays(arrays, classes)
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=entry.parent))
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array)
        (staging / "meta.json").write_text(json.dumps({"classes": classes, "source": str(source), "fingerprint": fingerprint}))
        try:
            staging.rename(entry)  # atomic: concurrent workers never see half a cache entry
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    tensors = [torch.from_numpy(arrays[name]) for name in CACHE_ARRAYS]
    return ImageData(*tensors, tuple(classes), str(source), fingerprint)


def fingerprint_arrays(arrays: dict[str, np.ndarray], classes: list[str]) -> str:
    """sha256 over every array's shape and bytes and the class names (about 0.3 s for CIFAR-10)."""
    digest = hashlib.sha256(json.dumps(classes).encode())
    for name in CACHE_ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}{array.shape}{array.dtype}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:32]


def _decode(source: Path, image_size: int | None) -> tuple[dict[str, np.ndarray], list[str]]:
    print(f"decoding {source} (once; later runs load the cache in {cache_dir()})", flush=True)
    try:
        if source.is_dir():
            if (source / "data_batch_1").exists() or (source / "cifar-10-batches-py").is_dir():
                return _official_cifar_dir(source)
            return _image_folder(_folder_members(source), image_size, str(source))
        if not tarfile.is_tarfile(source):
            raise UserError(f"{source} is neither a folder nor a readable .tar/.tar.gz archive. {DATA_FORMS}")
        with tarfile.open(source, "r:*") as archive:
            names = archive.getnames()
            if any(name.endswith("data_batch_1") for name in names):
                return _official_cifar_tar(archive)
            return _image_folder(_tar_members(archive), image_size, str(source))
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise UserError(f"Could not read {source}: {error}. The archive may be truncated or corrupt; {DATA_FORMS}") from None


# -- official CIFAR-10 python format ---------------------------------------------------------

class _CifarUnpickler(pickle.Unpickler):
    """Admits only what the CIFAR-10 python format holds (dicts, lists, bytes, str, ints and
    numpy arrays): any other global in the stream, the way a crafted file runs code, is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module[:60]}.{name[:60]}, which the CIFAR-10 format never holds")


def _unpickle(blob: bytes, member: str) -> dict:
    try:
        loaded = _CifarUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as error:
        raise UserError(f"{member} is not a CIFAR-10 python batch ({str(error)[:200]}); the file is corrupt or was not made by the official archive.") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{member} is not a CIFAR-10 python batch (it holds a {type(loaded).__name__}, not a dict).")
    return loaded


def _official_batches(read) -> tuple[dict[str, np.ndarray], list[str]]:  # type: ignore[no-untyped-def]
    def member(name: str) -> dict:
        try:
            blob = read(name)
        except (KeyError, FileNotFoundError):
            raise UserError(f"The CIFAR-10 data has no {name}: the archive or folder is incomplete. {DATA_FORMS}") from None
        return _unpickle(blob, name)

    meta = member("batches.meta")
    names = meta.get(b"label_names")
    if not isinstance(names, list) or not names or not all(isinstance(c, bytes) for c in names):
        raise UserError("batches.meta has no list of label names (label_names): the CIFAR-10 data is corrupt.")
    classes = [c.decode(errors="replace") for c in names]

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        raw = member(name)
        data, labels = raw.get(b"data"), raw.get(b"labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or not isinstance(labels, list):
            raise UserError(f"{name} does not hold CIFAR-10 images (uint8 rows of 3x32x32 values and a list of labels): the data is corrupt.")
        labels_array = np.asarray(labels, dtype=np.int64)
        if len(labels_array) != len(data) or (len(labels_array) and not 0 <= labels_array.min() <= labels_array.max() < len(classes)):
            raise UserError(f"{name} has labels outside 0..{len(classes) - 1} or not one per image: the data is corrupt.")
        return data.reshape(-1, 3, 32, 32), labels_array

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = batch("test_batch")
    arrays = {
        "train_x": np.concatenate([x for x, _ in train]),
        "train_y": np.concatenate([y for _, y in train]),
        "test_x": test_x,
        "test_y": test_y,
    }
    return arrays, classes


def _official_cifar_dir(source: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    root = source / "cifar-10-batches-py" if (source / "cifar-10-batches-py").is_dir() else source
    return _official_batches(lambda name: (root / name).read_bytes())


def _official_cifar_tar(archive: tarfile.TarFile) -> tuple[dict[str, np.ndarray], list[str]]:
    by_name = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}

    def read(name: str) -> bytes:
        handle = archive.extractfile(by_name[name])
        assert handle is not None
        return handle.read()

    return _official_batches(read)


# -- image folders ---------------------------------------------------------------------------

# (split, class, encoded bytes); split is "train" or "test".
_Member = tuple[str, str, bytes]
_CHUNK = 1024  # images per decoding job: large enough to amortize the hand-off, small enough to stream


def _split_and_class(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """`.../train/<class>/<file>` -> ("train", class); a bare `<class>/<file>` counts as train."""
    if len(parts) >= 3 and parts[-3] in ("train", "test"):
        return parts[-3], parts[-2]
    if len(parts) == 2:
        return "train", parts[0]
    return None


def _folder_members(root: Path) -> Iterator[_Member]:
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            place = _split_and_class(path.relative_to(root).parts)
            if place:
                yield (*place, path.read_bytes())


def _tar_members(archive: tarfile.TarFile) -> Iterator[_Member]:
    for member in archive:
        if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
            parts = Path(member.name).parts
            place = _split_and_class(parts) or (_split_and_class(parts[1:]) if len(parts) == 3 else None)
            if place:
                handle = archive.extractfile(member)
                assert handle is not None
                yield (*place, handle.read())


def _size_mismatch(shapes: set[tuple[int, ...]]) -> str:
    sizes = ", ".join(f"{w}x{h}" for h, w, *_ in sorted(shapes)[:3])
    return f"images differ in size ({sizes}...); set dataset.image_size in the study file to resize them"


def _decode_chunk(blobs: list[bytes], image_size: int | None) -> np.ndarray | str:
    """Decode a chunk into one (n, C, H, W) array, or say what is wrong with it."""
    images = []
    for blob in blobs:
        try:
            with Image.open(io.BytesIO(blob)) as image:
                image = image.convert("RGB")
                if image_size is not None and image.size != (image_size, image_size):
                    image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
                images.append(np.asarray(image))
        except Image.DecompressionBombError as error:
            return f"an image is too large to decode safely ({str(error)[:120]}); resize it below {Image.MAX_IMAGE_PIXELS:,} pixels"
        except (UnidentifiedImageError, OSError, ValueError) as error:
            return f"an image could not be decoded ({str(error)[:200]})"
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        return _size_mismatch(shapes)
    return np.stack(images).transpose(0, 3, 1, 2)


def _image_folder(members: Iterator[_Member], image_size: int | None, source: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Decode on every core while the archive is still being read; copy each chunk into its split as it lands.

    Reading finishes well before decoding, so the splits' sizes are known in time to allocate the
    final arrays once: peak memory stays near one copy of the images plus the encoded files.
    """
    started = time.monotonic()
    places: list[tuple[str, str]] = []
    pool = ProcessPoolExecutor(len(os.sched_getaffinity(0)), mp_context=multiprocessing.get_context("fork"), initializer=_decoder_started)
    try:
        jobs = []
        while chunk := list(itertools.islice(members, _CHUNK)):
            places.extend((split, cls) for split, cls, _ in chunk)
            jobs.append(pool.submit(_decode_chunk, [blob for _, _, blob in chunk], image_size))
        classes, labels, is_train = _labels(places, source)
        splits = _fill_splits(jobs, is_train, source, started)
    except BaseException:  # an error, Ctrl-C or SIGTERM: no decoder may outlive this
        _stop(pool)
        raise
    pool.shutdown()
    arrays = {"train_x": splits[True], "train_y": labels[is_train], "test_x": splits[False], "test_y": labels[~is_train]}
    return arrays, classes


class _Signalled(BaseException):
    def __init__(self, number: int) -> None:
        self.number = number


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """While decoding, Ctrl-C and SIGTERM raise in the main thread (then the decoders are stopped),
    instead of a traceback or a death that leaves the decoders running. Elsewhere than the main
    thread signals cannot be caught: the decoders' parent-death signal still stops them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(number: int, frame: object) -> None:
        raise _Signalled(number)

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _decoder_started() -> None:
    """In each decoder process: leave Ctrl-C to the parent, and die with it (Linux), never orphaned.
    A forked decoder inherits the parent's SIGTERM handler, which would turn `terminate()` into an
    exception inside its task (and the process would live on): restore the default, death."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(pool: ProcessPoolExecutor) -> None:
    for process in list(getattr(pool, "_processes", {}).values()):  # no public API stops running workers
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _labels(places: list[tuple[str, str]], source: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class names, integer labels and the train/test mask of every image, in reading order."""
    if not places:
        raise UserError(f"{source} holds no images in a train/<class>/ or <class>/ layout. {DATA_FORMS}")
    classes = sorted({cls for split, cls in places if split == "train"})
    unknown = sorted({cls for split, cls in places if split == "test"} - set(classes))
    if unknown:
        raise UserError(f"{source}: test classes {unknown} have no training folder; train/ and test/ must hold the same classes.")
    index = {cls: i for i, cls in enumerate(classes)}
    labels = np.array([index[cls] for _, cls in places], dtype=np.int64)
    return classes, labels, np.array([split == "train" for split, _ in places])


def _fill_splits(jobs: list[Future], is_train: np.ndarray, source: str, started: float) -> dict[bool, np.ndarray]:
    """Copy each decoded chunk into the train (True) or test (False) array and drop it at once;
    `started` is when reading began (the time left is judged from it)."""
    splits: dict[bool, np.ndarray] = {}
    filled = {True: 0, False: 0}
    start = 0
    # A bar on a terminal; in a log, a line at each quarter with the time left.
    bar = tqdm(total=len(is_train), desc="decoding", unit="img", unit_scale=True, leave=False, disable=not sys.stdout.isatty())
    quarter = 1
    while jobs:
        decoded = jobs.pop(0).result()
        bar.update(len(decoded))
        if bar.disable and quarter < 4 and (start + len(decoded)) * 4 >= quarter * len(is_train):
            done, elapsed = start + len(decoded), time.monotonic() - started
            print(f"decoding {done:,}/{len(is_train):,} images, {elapsed:.0f} s, about {elapsed * (len(is_train) - done) / done:.0f} s left", flush=True)
            quarter += 1
        if isinstance(decoded, str):
            raise UserError(f"{source}: {decoded}. Remove or replace the broken file.")
        if not splits:
            splits = {flag: np.empty(((is_train == flag).sum(), *decoded.shape[1:]), dtype=np.uint8) for flag in (True, False)}
        elif decoded.shape[1:] != splits[True].shape[1:]:
            raise UserError(f"{source}: {_size_mismatch({splits[True].shape[2:], decoded.shape[2:]})}.")
        for flag, target in splits.items():
            part = decoded[is_train[start : start + len(decoded)] == flag]
            target[filled[flag] : filled[flag] + len(part)] = part
            filled[flag] += len(part)
        start += len(decoded)
    bar.close()
    return splits


# -- download and synthetic data -------------------------------------------------------------

def _download_cifar10() -> Path:
    target = cache_dir() / "cifar-10-python.tar.gz"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    print(f"downloading CIFAR-10 from {CIFAR10_URL} to {target}", flush=True)
    try:
        urllib.request.urlretrieve(CIFAR10_URL, partial)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise UserError(
            f"CIFAR-10 is not on this machine and could not be downloaded ({error}). "
            f"Point the study at a local copy with --data PATH. {DATA_FORMS}"
        ) from None
    digest = hashlib.md5(partial.read_bytes()).hexdigest()
    if digest != CIFAR10_MD5:
        partial.unlink()
        raise UserError(f"The downloaded CIFAR-10 archive has checksum {digest}, expected {CIFAR10_MD5}; try again or use --data.")
    partial.rename(target)
    return target


def _synthetic(spec: DatasetSpec) -> ImageData:
    """Class prototypes (smooth random images) plus strong pixel noise: learnable, not trivial."""
    size = spec.image_size or 16
    generator = torch.Generator().manual_seed(1234)
    low_res = torch.rand(spec.num_classes, 3, 4, 4, generator=generator)
    prototypes = torch.nn.functional.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, spec.num_classes, (n,), generator=generator)
        noise = 0.35 * torch.randn(n, 3, size, size, generator=generator)
        images = (prototypes[labels] + noise).clamp(0, 1)
        return (images * 255).round().to(torch.uint8), labels

    train_x, train_y = draw(spec.train_examples)
    test_x, test_y = draw(spec.test_examples)
    classes = tuple(f"class_{i}" for i in range(spec.num_classes))
    arrays = dict(zip(CACHE_ARRAYS, (train_x.numpy(), train_y.numpy(), test_x.numpy(), test_y.numpy())))
    return ImageData(train_x, train_y, test_x, test_y, classes, "synthetic", fingerprint_arrays(arrays, list(classes)))
