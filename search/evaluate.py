"""`python -m search.evaluate --study NAME --top K --seeds S`: the best configurations, measured on the test set.

The search picked its configurations by validation loss, so that loss flatters them. Here each
of the top K completed trials is retrained from scratch with S seeds on the whole training
split (the validation images included), with the same example budget and so the same steps,
and measured once, at the end, on the held-out test split.

The runs are stored as trials of a second Optuna study, `<study>:evaluation`, in the same
storage. That keeps them queryable exactly like the search (the `search_evaluation` SQL view,
the dashboard, Optuna's API) while the search's own trials, and its sampler's history, hold
only what the search chose. A rerun adds only the (configuration, seed) pairs not yet completed.

`--from-checkpoint` retrains nothing: it loads the final weights that the top trials kept (the
study's `checkpoints`, `search.store.artifacts`) and measures them on the test split, once each
(seeds do not apply), stored in the same evaluation study with their `checkpoint_path`. They were
trained on the search's training split only, so they measure the trials themselves, not the
configurations. A trial whose weights were not kept (outside the k best, pruned, `keep: none`) is
named, not measured.
"""
from __future__ import annotations

import argparse
import sys

from search.api import Study
from search.cli import command_parser
from search.errors import exits_on_user_error
from search.store.urls import STORAGE_ENV


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("evaluate", __doc__, '--study cifar_bs --top 2 --seeds 3 --data ../shared/data/cifar10-jpeg.tar.gz')
    parser.add_argument("--study", required=True, help="a study name from studies/, a study file, or a study name in the storage")
    parser.add_argument("--study-name", help="the name the study was run under (search.run --study-name), with its study file as --study")
    parser.add_argument("--storage", help=f"database URL (default: ${STORAGE_ENV}, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--top", type=int, default=3, help="how many of the best completed trials to retrain (default 3)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per configuration (default 3)")
    parser.add_argument("--data", help="data set location, if not where the study was run (see search.run --data)")
    parser.add_argument(
        "--from-checkpoint", action="store_true",
        help="measure the final weights the top trials kept on the test split, without retraining (--seeds does not apply)",
    )
    return parser.parse_args(argv)


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return Study.open(args.study, args.storage, args.study_name).evaluate(args.top, args.seeds, args.data, args.from_checkpoint)


if __name__ == "__main__":
    sys.exit(main())
