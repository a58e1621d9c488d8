"""`python -m search.probe --study NAME`: the gradient noise scale B_simple along a training run.

Measures the simple gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018,
`search.measure.noise_scale`) on the study's own model and data, at initialization and at points
along a run with the study's optimizer and schedule, and the training loss at each. The run is
tuned when it can be: in a frontier study that has its frontier, the smallest batch size's best
configuration (the one the data-efficiency curve trains) for the whole budget; otherwise a short
run of the middle of the search space, labelled untuned. The result is stored on the study (user
attribute `noise_scale_probe:<UTC time>`, one per run); `search.report` predicts the frontier
from its trajectory and sets B_simple beside the measured critical batch size.
"""
from __future__ import annotations

import argparse
import sys

from search.api import Study
from search.cli import command_parser
from search.errors import exits_on_user_error
from search.measure.probe import (
    ProbeSettings,
    prediction_lines,
)
from search.record import PROBE_PREFIX
from search.store.urls import STORAGE_ENV


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("probe", __doc__, '--study cifar_bs --data ../shared/data/cifar10-jpeg.tar.gz')
    parser.add_argument("--study", required=True, help="a study name from studies/ or a path to a study YAML file")
    parser.add_argument("--storage", help=f"database URL (default: ${STORAGE_ENV}, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--study-name", help="name of the study in the storage (default: the study file's name)")
    parser.add_argument("--budget-examples", type=int, help="as given to search.run (validated as search.run does; the probe does not depend on it)")
    parser.add_argument("--data", help="data set location (archive, folder); see the README for the forms")
    parser.add_argument("--batch-size", type=int, help="batch size of the training run (default: a frontier's smallest, else the middle of the search space)")
    parser.add_argument("--train-examples", type=int, help="length of the run (default: the budget with a tuned configuration, else 8192)")
    parser.add_argument("--points", type=int, help="measurements along the run, after initialization (default: 8 tuned, 3 untuned)")
    parser.add_argument("--small-batch", type=int, help="small batch size of the estimator, a multiple of the normalization group (default: about 32)")
    parser.add_argument("--big-batch", type=int, help="big batch size, a multiple of the small one (default: 16 x the small one)")
    parser.add_argument("--measurements", type=int, default=16, help="big batches averaged per point (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches")
    parser.add_argument("--schedule", choices=("constant", "study"), default="constant",
                        help="learning rate after warm-up: held constant (default; annealing would shrink the gradient norm) or the study's decay")
    return parser.parse_args(argv)


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study = Study.from_file(args.study, args.storage, {"name": args.study_name, "budget_examples": args.budget_examples, "dataset.path": args.data})
    settings = ProbeSettings(args.batch_size, args.train_examples, args.points, args.small_batch, args.big_batch, args.measurements, args.seed, args.schedule)
    result = study.probe(settings)
    print("\n".join(prediction_lines(result, study.spec.search_space.batch_sizes())))
    print(f"saved as '{PROBE_PREFIX}{result.created}' for {study.spec.model.describe()} on this data ({result.seconds:.0f} s): study "
          f"'{study.name}' and every later study of this model and data get it (no study is created here); "
          f"`python -m search.report --study {args.study}` draws it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
