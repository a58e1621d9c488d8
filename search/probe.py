"""`python -m search.probe --study NAME`: predict the largest useful batch size before searching.

Measures the simple gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018,
`search.noise_scale`) on the study's own model and data: at initialization and at a few points
of a short training run at a moderate batch size, with the study's optimizer and schedule.
The batches are the training stream of the search itself, augmentation on, so the noise is the
noise SGD sees. The last (most trained) estimate is the predicted critical batch size; the
result is stored on the study (user attribute `noise_scale_probe:<UTC time>`, one per run) and
`search.report` draws it next to the batch size where the search's loss actually turns up.
"""
from __future__ import annotations

import argparse
import sys

import optuna

from search.cli import command_parser
from search.config.load import load_spec
from search.config.spec import StudySpec
from search.data.source import load_data
from search.errors import UserError, exits_on_user_error
from search.measure.probe import prediction_lines, run_probe
from search.record import PROBE_PREFIX
from search.store import measurements
from search.store.storage import open_storage
from search.store.urls import STORAGE_ENV, redact, resolve_url
from search.train.device import worker_device
from search.train.model import check_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("probe", __doc__, '--study cifar_bs --data ../shared/data/cifar10-jpeg.tar.gz')
    parser.add_argument("--study", required=True, help="a study name from studies/ or a path to a study YAML file")
    parser.add_argument("--storage", help=f"database URL (default: ${STORAGE_ENV}, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--study-name", help="name of the study in the storage (default: the study file's name)")
    parser.add_argument("--budget-examples", type=int, help="as given to search.run (validated as search.run does; the probe does not depend on it)")
    parser.add_argument("--data", help="data set location (archive, folder); see the README for the forms")
    parser.add_argument("--batch-size", type=int, help="batch size of the short training run (default: the middle of the search space)")
    parser.add_argument("--train-examples", type=int, default=8192, help="length of the short training run (default 8192)")
    parser.add_argument("--points", type=int, default=3, help="measurements along the run, after initialization (default 3)")
    parser.add_argument("--small-batch", type=int, default=32, help="small batch size of the estimator (default 32)")
    parser.add_argument("--big-batch", type=int, default=512, help="big batch size, a multiple of the small one (default 512)")
    parser.add_argument("--measurements", type=int, default=16, help="big batches averaged per point (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches")
    return parser.parse_args(argv)


def _check_args(args: argparse.Namespace, spec: StudySpec) -> int:
    """The probe's batch size, after checking the estimator's settings."""
    if args.small_batch < 1 or args.big_batch % args.small_batch or args.big_batch <= args.small_batch:
        raise UserError(
            f"--big-batch ({args.big_batch}) must be a multiple of --small-batch ({args.small_batch}) and larger: the "
            f"estimator splits each big batch into small ones. E.g. --small-batch 32 --big-batch 512."
        )
    if args.points < 1 or args.measurements < 2:
        raise UserError(f"--points must be at least 1 and --measurements at least 2 (got {args.points} and {args.measurements}).")
    sizes = spec.search_space.batch_sizes()
    batch_size = args.batch_size or sizes[len(sizes) // 2]
    if batch_size < 1 or args.train_examples < batch_size * args.points:
        raise UserError(
            f"--train-examples ({args.train_examples}) gives fewer than one step of batch size {batch_size} per point "
            f"(--points {args.points}); raise it to at least {batch_size * args.points}."
        )
    return batch_size


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = load_spec(args.study, {"name": args.study_name, "budget_examples": args.budget_examples, "dataset.path": args.data})
    batch_size = _check_args(args, spec)
    url = resolve_url(args.storage, spec.name, spec.storage)
    device, device_name = worker_device()
    data = load_data(spec, device)
    check_model(spec, data)
    storage = open_storage(url)
    print(f"study    {spec.name}  storage {redact(url)}  device {device_name}", flush=True)
    result = run_probe(spec, data, args, batch_size)
    key = f"{PROBE_PREFIX}{result['created']}"
    measurements.save(storage, measurements.subject(spec, data.fingerprint), key, result)
    if spec.name in optuna.get_all_study_names(storage):
        optuna.load_study(study_name=spec.name, storage=storage).set_user_attr(key, result)
    print("\n".join(prediction_lines(result)))
    print(f"saved as '{key}' for {spec.model.describe()} on this data ({result['seconds']:.0f} s): study '{spec.name}' and every "
          f"later study of this model and data get it (no study is created here); `python -m search.report --study {args.study}` draws it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
