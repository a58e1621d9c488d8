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

import optuna

from search.analysis.frontier import frontier_rows
from search.cli import command_parser
from search.config.load import load_spec
from search.config.spec import StudySpec
from search.data.source import load_data
from search.errors import UserError, exits_on_user_error
from search.measure.probe import (
    ProbeRun,
    normalization_group,
    prediction_lines,
    run_probe,
    untuned_run,
)
from search.store.measurements import save_probe
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
    parser.add_argument("--batch-size", type=int, help="batch size of the training run (default: a frontier's smallest, else the middle of the search space)")
    parser.add_argument("--train-examples", type=int, help="length of the run (default: the budget with a tuned configuration, else 8192)")
    parser.add_argument("--points", type=int, help="measurements along the run, after initialization (default: 8 tuned, 3 untuned)")
    parser.add_argument("--small-batch", type=int, help="small batch size of the estimator, a multiple of the normalization group (default: about 32)")
    parser.add_argument("--big-batch", type=int, help="big batch size, a multiple of the small one (default: 16 x the small one)")
    parser.add_argument("--measurements", type=int, default=16, help="big batches averaged per point (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches")
    return parser.parse_args(argv)


def tuned_run(spec: StudySpec, storage: optuna.storages.BaseStorage, batch_size: int | None) -> ProbeRun | None:
    """The frontier's best configuration at `batch_size` (default: its smallest); None without a frontier."""
    if spec.name not in optuna.get_all_study_names(storage):
        return None
    trials = optuna.load_study(study_name=spec.name, storage=storage).get_trials(deepcopy=False)
    rows = {row.batch_size: row for row in frontier_rows(trials)}
    row = rows.get(batch_size) if batch_size else (rows[min(rows)] if rows else None)
    if row is None:
        return None
    source = f"tuned: the frontier's best at batch size {row.batch_size:,} (search trial {row.source_trial}, re-run with {row.n_seeds} seeds)"
    return ProbeRun(row.batch_size, row.lr, row.momentum, row.effective_lr, source, tuned=True)


def _check_estimator(args: argparse.Namespace, group: int | None) -> None:
    """Fill the estimator's defaults from the normalization group, then check its settings."""
    unit = group or 1
    if args.small_batch is None:
        args.small_batch = unit * max(1, round(32 / unit))
    if args.big_batch is None:
        args.big_batch = 16 * args.small_batch
    if args.small_batch < 1 or args.small_batch % unit or args.big_batch % args.small_batch or args.big_batch <= args.small_batch:
        raise UserError(
            f"--big-batch ({args.big_batch}) must be a larger multiple of --small-batch ({args.small_batch}), and --small-batch a "
            f"multiple of the normalization group ({unit}: {'the smallest batch size trials train with' if group else 'no batch norm'}): "
            f"the estimator splits each big batch into small ones. E.g. --small-batch {unit * max(1, round(32 / unit))} (the default)."
        )
    if (args.points is not None and args.points < 1) or args.measurements < 2:
        raise UserError(f"--points must be at least 1 and --measurements at least 2 (got {args.points} and {args.measurements}).")


def _check_run(args: argparse.Namespace, spec: StudySpec, run: ProbeRun) -> None:
    """Fill the run's defaults (a tuned run trains the whole budget), then check its length."""
    if args.train_examples is None:
        args.train_examples = spec.budget_examples if run.tuned else 8192
    if args.points is None:
        args.points = 8 if run.tuned else 3
    if run.batch_size < 1 or args.train_examples < run.batch_size * args.points:
        raise UserError(
            f"--train-examples ({args.train_examples}) gives fewer than one step of batch size {run.batch_size} per point "
            f"(--points {args.points}); raise it to at least {run.batch_size * args.points}."
        )


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = load_spec(args.study, {"name": args.study_name, "budget_examples": args.budget_examples, "dataset.path": args.data})
    url = resolve_url(args.storage, spec.name, spec.storage)
    device, device_name = worker_device()
    data = load_data(spec, device)
    group = normalization_group(spec, check_model(spec, data))
    _check_estimator(args, group)
    storage = open_storage(url)
    sizes = spec.search_space.batch_sizes()
    run = tuned_run(spec, storage, args.batch_size) or untuned_run(spec, args.batch_size or sizes[len(sizes) // 2])
    _check_run(args, spec, run)
    print(f"study    {spec.name}  storage {redact(url)}  device {device_name}", flush=True)
    result = run_probe(spec, data, args, run, group)
    key = save_probe(storage, spec, data.fingerprint, result)
    print("\n".join(prediction_lines(result, sizes)))
    print(f"saved as '{key}' for {spec.model.describe()} on this data ({result.seconds:.0f} s): study '{spec.name}' and every "
          f"later study of this model and data get it (no study is created here); `python -m search.report --study {args.study}` draws it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
