"""Data path: cold decode, warm load, peak memory and time to the first batch, beside plain references.

    python -m bench.data [--data PATH] [--repeats N]

Every measurement runs in a fresh process (so imports, caches and peak memory start equal),
ours and the reference alternating, `--repeats` times; the table shows medians.
  * cold decode: `load_dataset` on an empty cache against a single-process loop that reads the
    archive and opens each JPEG with Pillow into a NumPy array;
  * warm load: `load_dataset` from the cache against `numpy.load` of the cached arrays;
  * first batch: warm load, validation split, data on the device and one augmented batch,
    against `numpy.load` plus one indexed, normalized batch;
  * peak memory: the largest resident set above the process's size after imports (parent;
    the largest decoding worker is shown separately), against the uint8 size of the images.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import Table, targets_line, write_result

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes(who: int) -> int:
    import resource

    return resource.getrusage(who).ru_maxrss * 1024


def _phase(name: str, source: str) -> dict[str, float]:
    """Run one measurement in this (fresh) process; the cache folder comes from SEARCH_CACHE_DIR."""
    import io
    import resource
    import tarfile
    import time

    import numpy as np
    import torch
    from PIL import Image

    from search.config.spec import DatasetSpec
    from search.data.batches import device_data
    from search.data.images import CACHE_ARRAYS, cache_dir, load_dataset

    spec = DatasetSpec(name="image_folder", path=source)
    baseline = _resident_bytes()
    started = time.perf_counter()
    images_bytes = 0
    if name in ("cold", "warm"):
        data = load_dataset(spec)
        images_bytes = data.train_images.nbytes + data.test_images.nbytes
    elif name == "first_batch":
        from search.config.load import load_spec

        study = load_spec("cifar_bs", {"dataset.path": source})
        data = load_dataset(study.dataset)
        next(iter(device_data(study, data, torch.device("cpu")).train_batches(512, 0)))
    elif name == "plain_cold":
        decoded = []
        with tarfile.open(source, "r:*") as archive:
            for member in archive:
                if member.isfile() and member.name.endswith((".jpg", ".jpeg", ".png")):
                    decoded.append(np.asarray(Image.open(io.BytesIO(archive.extractfile(member).read())).convert("RGB")))
        images = np.stack(decoded)
        images_bytes = images.nbytes
    elif name in ("plain_warm", "plain_first_batch"):
        entry = next((cache_dir() / "decoded").iterdir())
        arrays = {key: np.load(entry / f"{key}.npy") for key in CACHE_ARRAYS}
        images_bytes = arrays["train_x"].nbytes + arrays["test_x"].nbytes
        if name == "plain_first_batch":
            index = torch.randperm(len(arrays["train_x"]))[:512]
            (torch.from_numpy(arrays["train_x"])[index].float() / 255 - 0.5).contiguous()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_extra": _peak_bytes(resource.RUSAGE_SELF) - baseline,
        "worker_peak": _peak_bytes(resource.RUSAGE_CHILDREN),
        "images_bytes": images_bytes,
    }


def measure(name: str, source: Path, cache: Path) -> dict[str, float]:
    code = f"import json, bench.data as b; print(json.dumps(b._phase({name!r}, {str(source)!r})))"
    env = {**os.environ, "SEARCH_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_CIFAR, help="an image-folder archive or folder (default: the shared CIFAR-10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/data.md"))
    args = parser.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"no data at {args.data}; pass --data PATH to an image-folder archive or folder")
    pairs = [("cold", "plain_cold"), ("warm", "plain_warm"), ("first_batch", "plain_first_batch")]
    results: dict[str, list[dict[str, float]]] = {name: [] for pair in pairs for name in pair}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for ours, plain in pairs:
                cache = Path(folder) / f"cache{repeat}"
                # Each repeat's cold decode fills a fresh cache, which its warm phases then read.
                for name in (ours, plain) if repeat % 2 == 0 else (plain, ours):
                    results[name].append(measure(name, args.data, cache))
                    print(f"repeat {repeat}: {name:18s} {results[name][-1]['seconds']:7.2f} s", flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    data_mb = median("cold", "images_bytes") / 1e6
    rows = []
    for ours, plain in pairs:
        rows.append([
            ours.replace("_", " "), f"{median(ours, 'seconds'):.2f}", f"{median(plain, 'seconds'):.2f}",
            f"{median(ours, 'seconds') / median(plain, 'seconds'):.2f}",
            f"{median(ours, 'peak_extra') / 1e6:,.0f} ({median(ours, 'peak_extra') / 1e6 / data_mb:.2f}x)",
            f"{median(plain, 'peak_extra') / 1e6:,.0f}",
        ])
    cold, warm = median("cold", "seconds"), median("warm", "seconds")
    peaks = [median(name, "peak_extra") / 1e6 / data_mb for name in ("cold", "warm", "first_batch")]
    targets = [
        ("cold decode <= plain Pillow loop", cold <= median("plain_cold", "seconds")),
        ("warm load <= 1 s", warm <= 1.0),
        ("peak memory <= 2x the uint8 data", max(peaks) <= 2.0),
    ]
    body = [
        f"Data: `{args.data.name}`, {data_mb:,.0f} MB of uint8 images. {args.repeats} repeats, each phase in a fresh process; medians.",
        "",
        Table(["phase", "ours (s)", "plain reference (s)", "ratio", "our peak memory above imports (MB)", "reference peak (MB)"], rows).markdown(),
        "",
        f"Largest decoding worker during the cold decode: {median('cold', 'worker_peak') / 1e6:,.0f} MB resident (forked, "
        "so most of it is pages shared with the parent).",
        "",
        targets_line(targets),
    ]
    write_result(args.out, "Data path (`python -m bench.data`)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
