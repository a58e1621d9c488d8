"""`python -m search.run --study NAME`: run (or resume) a fixed-budget batch-size search.

Everything a user can get wrong is checked before the storage is touched: the study file,
the data, the model, the budget, the database. Then the study is created once and the
workers (one per GPU, or the CPU) share it until the study-wide number of trials is reached.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import torch

from models import build_model
from search.data import ImageData, load_dataset, stratified_split
from search.errors import UserError, exits_on_user_error
from search.progress import summary
from search.pruners import build_pruner
from search.shutdown import STOP
from search.space import build_sampler
from search.spec import StudySpec, load_spec
from search.storage import STORAGE_ENV, backend, create_or_resume, open_storage, redact, resolve_url
from search.worker import SPEC_ENV, run_worker


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.split("\n")[0])
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
    }


def worker_count(requested: str) -> int:
    if requested == "auto":
        return max(1, torch.cuda.device_count())
    if not requested.isdigit() or int(requested) < 1:
        raise UserError(f"--workers must be 'auto' or a positive number, not '{requested}'.")
    return int(requested)


def _check_model(spec: StudySpec, num_classes: int, image_shape: tuple[int, int, int]) -> None:
    """Build the model and push two images through it, so a bad model fails before the study exists."""
    try:
        model = build_model(spec.model.name, num_classes, image_shape[0], **spec.model.args)
        with torch.no_grad():
            logits = model.eval()(torch.zeros(2, *image_shape))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise UserError(
            f"Model '{spec.model.name}' with arguments {spec.model.args} cannot be built for {num_classes} classes of "
            f"{'x'.join(map(str, image_shape))} images: {error.args[0] if error.args else error}. Fix `model` in the study file."
        ) from None
    if logits.shape != (2, num_classes):
        raise UserError(f"Model '{spec.model.name}' returns shape {tuple(logits.shape)}, expected (batch, {num_classes}).")


def _print_header(spec: StudySpec, url: str, workers: int, train: int, val: int, image_data: ImageData) -> None:
    storage_note = " (embedded SQLite: one worker; use PostgreSQL for several)" if backend(url) == "sqlite" else ""
    device = f"{workers} x GPU" if torch.cuda.is_available() else f"{workers} x CPU ({max(1, (os.cpu_count() or 1) // workers)} threads each)"
    steps = "  ".join(f"{b}:{spec.steps(b)}" for b in spec.search_space.batch_sizes())
    budget = f"budget {spec.budget_examples:,} examples, validation every {spec.report_every():,}"
    if spec.budget_seconds is not None:
        budget = f"budget {spec.budget_seconds:g} s of training, validation every {spec.report_every_ms() / 1000:g} s (predicted)"
        steps = "from each device's speed profile, in each trial's line"
    print(
        f"study    {spec.name}  storage {redact(url)}{storage_note}\n"
        f"data     {image_data.source}: {train:,} train / {val:,} validation images, {image_data.num_classes} classes, "
        f"{'x'.join(map(str, image_data.image_shape))}\n"
        f"model    {spec.model.name} {spec.model.args or ''}  {budget}\n"
        f"steps    per batch size  {steps}\n"
        f"search   sampler {spec.sampler.name} (seed {spec.sampler.seed})  pruner {spec.pruner.name}  "
        f"{spec.lr_parameterization.describe()}\n"
        f"workers  {device}",
        flush=True,
    )


def _spawn_workers(spec: StudySpec, url: str, workers: int, quiet: bool, speed_profile: bool) -> int:
    """One subprocess per worker, each pinned to one GPU (or sharing the CPU's cores)."""
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = []
    for index in range(workers):
        env = {**os.environ, STORAGE_ENV: url, SPEC_ENV: spec.model_dump_json(), "SEARCH_THREADS": str(threads)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        command = [sys.executable, "-m", "search.worker", str(index)] + (["--quiet"] if quiet else [])
        command += [] if speed_profile else ["--skip-speed-profile"]
        # A session of its own: Ctrl-C reaches the workers once, forwarded from here.
        processes.append(subprocess.Popen(command, env=env, start_new_session=True))

    def forward(number: int, frame: object) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(number)

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, forward)
    codes = [process.wait() for process in processes]
    for index, code in enumerate(codes):
        if code < 0:
            print(f"worker {index} was killed by {signal.Signals(-code).name}; its trial is retried by the others "
                  f"(or by the next run) once its heartbeat is missed.", file=sys.stderr)
    # The shell's convention for a death by signal N is 128 + N.
    return next((128 - code if code < 0 else code for code in codes if code), 0)


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = load_spec(args.study, _overrides(args))
    url = resolve_url(args.storage, spec.name, spec.storage)
    workers = worker_count(args.workers)
    if backend(url) == "sqlite" and workers > 1:
        raise UserError(
            f"The embedded SQLite storage supports one worker, and {workers} were asked for. For several workers "
            f"use PostgreSQL: --storage postgresql+psycopg2://user@host/db (see docker-compose.yml), or --workers 1."
        )
    pruner = build_pruner(spec)
    image_data = load_dataset(spec.dataset)
    train_index, val_index = stratified_split(image_data.train_labels, spec.dataset.val_size, spec.dataset.split_seed)
    _check_model(spec, image_data.num_classes, image_data.image_shape)

    storage = open_storage(url)
    study = create_or_resume(storage, spec, build_sampler(spec), pruner)
    _print_header(spec, url, workers, len(train_index), len(val_index), image_data)
    if workers == 1:
        STOP.install()
        code = run_worker(spec, url, images=image_data, quiet=args.quiet, speed_profile=not args.skip_speed_profile)
    else:
        storage.engine.dispose()  # no pooled connection may cross into the workers
        code = _spawn_workers(spec, url, workers, args.quiet, speed_profile=not args.skip_speed_profile)
    print(summary(study, redact(url)), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
