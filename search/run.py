"""`python -m search.run --study NAME`: run (or resume) a fixed-budget batch-size search.

Everything a user can get wrong is checked before the storage is touched: the study file,
the data, the model, the budget, the database. Then the study is created once and the
workers (one per GPU, or the CPU) share it until the study-wide number of trials is reached.
"""
from __future__ import annotations

import argparse
import sys
from typing import get_args

from search.api import Study
from search.cli import command_parser
from search.config.spec import SamplerSpec
from search.errors import exits_on_user_error
from search.store.urls import STORAGE_ENV


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("run", __doc__, '--study smoke', '--study cifar_bs --data ../shared/data/cifar10-jpeg.tar.gz --n-trials 4 --budget-examples 20000', '--study examples/tabular_mlp/study.yaml')
    parser.add_argument("--study", required=True, help="a study name from studies/ or a path to a study YAML file")
    parser.add_argument("--storage", help=f"database URL (default: ${STORAGE_ENV}, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--study-name", help="name of the study in the storage (default: the study file's name)")
    parser.add_argument("--n-trials", type=int, help="study-wide number of trials (all workers together)")
    parser.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    parser.add_argument("--budget-examples", type=int, help="training examples per trial (batch size x steps)")
    parser.add_argument("--budget-seconds", type=float, help="training seconds per trial instead (steps from the speed profile)")
    parser.add_argument("--skip-speed-profile", action="store_true", help="do not measure this device's speed profile before the first trial")
    parser.add_argument("--data", help="data set location (archive, folder); see the README for the forms")
    parser.add_argument("--workers", default="auto", help="'auto' (one per GPU, else one on the CPU) or a number")
    parser.add_argument("--seed", type=int, help="sampler seed")
    parser.add_argument("--sampler", choices=get_args(SamplerSpec.model_fields["name"].annotation), help="sampler, instead of the study file's sampler.name")
    parser.add_argument("--quiet", action="store_true", help="only a line per trial, no line per validation")
    return parser.parse_args(argv)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "name": args.study_name,
        "n_trials": args.n_trials,
        "timeout_seconds": args.timeout,
        "budget_examples": args.budget_examples,
        "budget_seconds": args.budget_seconds,
        "dataset.path": args.data,
        "sampler.seed": args.seed,
        "sampler.name": args.sampler,
    }


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study = Study.from_file(args.study, storage=args.storage, overrides=_overrides(args))
    return study.run(workers=args.workers, quiet=args.quiet, speed_profile=not args.skip_speed_profile)


if __name__ == "__main__":
    sys.exit(main())
