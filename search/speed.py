"""`python -m search.speed --study NAME`: how many examples per second this device trains, per batch size.

A fixed example budget says which batch size learns most per example; users pay in seconds.
This measures the other half on the user's own device: the examples/s of a full training step
(the study's model, the on-device data path with its augmentation, forward, backward, SGD
step) for each power-of-two micro-batch size, after a warm-up, over repeated timed windows
(median and spread). The profile is stored on the study, one per device, and used to turn a
time budget into step counts (`budget_seconds`), to pick the fastest micro-batch, and in the
report. It takes seconds: 16.5 s for airbench [32, 64, 128] at batch sizes 8-256 on one thread
of our 2-core CPU while other jobs loaded it.
"""
from __future__ import annotations

import argparse
import sys

import optuna

from search.cli import command_parser
from search.config.load import load_spec
from search.config.spec import StudySpec
from search.data.source import load_data
from search.errors import exits_on_user_error
from search.measure.profile import format_table
from search.measure.speed import measure, profile_sizes
from search.store import measurements
from search.store.measurements import store_profile
from search.store.storage import open_storage, stored_spec
from search.store.trials import locate
from search.study.measured import save_profile
from search.train.device import worker_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("speed", __doc__, '--study cifar_bs --data ../shared/data/cifar10-jpeg.tar.gz')
    parser.add_argument("--study", required=True, help="a study file (name in studies/ or path), or a study's name in the storage")
    parser.add_argument("--storage", help="database URL (default: $SEARCH_STORAGE, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--data", help="data set location, if not the study's")
    return parser.parse_args(argv)


def _study_and_spec(study_arg: str, cli_storage: str | None, data_path: str | None) -> tuple[optuna.storages.BaseStorage, optuna.Study | None, StudySpec]:
    """The storage, the stored study if it exists (never created here), and the spec to measure."""
    name, url = locate(study_arg, cli_storage)
    storage = open_storage(url)
    if name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        return storage, study, stored_spec(study, data_path)
    return storage, None, load_spec(study_arg, {"dataset.path": data_path})


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    storage, study, spec = _study_and_spec(args.study, args.storage, args.data)
    device, device_name = worker_device()
    data = load_data(spec, device)
    print(f"measuring {spec.model.describe()} on {device_name}, batch sizes {', '.join(map(str, profile_sizes(spec)))} ...", flush=True)
    profile = measure(spec, data, device_name)
    save_profile(storage, measurements.subject(spec, data.fingerprint), profile)
    if study is not None:
        store_profile(study, profile)  # replaces the study's copy: later trials use the new rates
    print(format_table(profile))
    print(
        f"saved as the profile of {spec.model.describe()} on this data and {device_name}: every study of them uses it "
        f"(no study was created or changed{'' if study is None else f' except study {study.study_name!r}, whose copy is replaced'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
