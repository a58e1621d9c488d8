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

from search.api import Study
from search.cli import command_parser
from search.errors import exits_on_user_error
from search.measure.profile import format_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("speed", __doc__, '--study cifar_bs --data ../shared/data/cifar10-jpeg.tar.gz')
    parser.add_argument("--study", required=True, help="a study file (name in studies/ or path), or a study's name in the storage")
    parser.add_argument("--storage", help="database URL (default: $SEARCH_STORAGE, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--data", help="data set location, if not the study's")
    return parser.parse_args(argv)


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study = Study.open(args.study, args.storage)
    profile = study.speed(args.data)
    print(format_table(profile))
    print(
        f"saved as the profile of {profile.model} on this data and {profile.device}: every study of them uses it "
        f"(no study was created or changed, except an existing study '{study.name}', whose copy is replaced)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
