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
import math
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Any

import torch
import torch.nn.functional as F

from models import build_model
from search import noise_scale
from search.analysis import PROBE_PREFIX
from search.batches import DeviceData
from search.data import load_dataset
from search.errors import UserError, exits_on_user_error
from search.pruners import build_pruner
from search.run import _check_model
from search.space import build_sampler, effective_lr
from search.spec import StudySpec, load_spec
from search.storage import STORAGE_ENV, create_or_resume, open_storage, redact, resolve_url
from search.training import Classifier, TrainingPlan
from search.worker import device_data, worker_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m search.probe", description=__doc__.split("\n")[0])
    parser.add_argument("--study", required=True, help="a study name from studies/ or a path to a study YAML file")
    parser.add_argument("--storage", help=f"database URL (default: ${STORAGE_ENV}, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--study-name", help="name of the study in the storage (default: the study file's name)")
    parser.add_argument("--budget-examples", type=int, help="as given to search.run (it must match an existing study's)")
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


def probe_hyperparams(spec: StudySpec, batch_size: int) -> tuple[float, float, float]:
    """(lr, momentum, effective lr): the middle of the search space (geometric on a log range)."""
    lr_range, momentum_range = spec.search_space.lr, spec.search_space.momentum
    lr = math.sqrt(lr_range.low * lr_range.high) if lr_range.log else (lr_range.low + lr_range.high) / 2
    momentum = (momentum_range.low + momentum_range.high) / 2
    return lr, momentum, effective_lr(lr, batch_size, momentum, spec.lr_parameterization)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run_probe(spec: StudySpec, data: DeviceData, num_classes: int, args: argparse.Namespace, batch_size: int) -> dict[str, Any]:
    """Train the study's model briefly, estimating the noise scale at init and `args.points` times along the way."""
    started = time.perf_counter()
    lr, momentum, step_lr = probe_hyperparams(spec, batch_size)
    steps = args.train_examples // batch_size
    plan = TrainingPlan(batch_size, steps, step_lr, momentum, report_every_examples=steps * batch_size, seed=args.seed)
    torch.manual_seed(args.seed)
    model = build_model(spec.model.name, num_classes, data.train_images.shape[1], **spec.model.args).to(data.device)
    module = Classifier(model.to(memory_format=data.memory_format), plan, spec.optimizer, spec.schedule)
    # The study's optimizer and learning-rate schedule, exactly as a trial configures them.
    (optimizer,), (scheduler,) = module.configure_optimizers()

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=spec.optimizer.label_smoothing)

    print(
        f"probe    {spec.model.name} at batch size {batch_size}, lr {lr:.4g} (effective {step_lr:.4g}), momentum "
        f"{momentum:.3f}, for {steps * batch_size:,} examples ({steps} steps, augmentation on); gradient norms at "
        f"{args.small_batch} and {args.big_batch} examples, {args.measurements} big batches per point",
        flush=True,
    )
    model.train()  # batch norm as in training: each small chunk normalizes with its own statistics
    measure_batches = iter(data.train_batches(args.big_batch, args.seed + 1))
    train_batches = iter(data.train_batches(batch_size, args.seed))
    boundaries = [round(steps * k / args.points) for k in range(args.points + 1)]
    points: list[dict[str, Any]] = []
    step, losses = 0, []
    for boundary in boundaries:
        while step < boundary:
            images, labels = next(train_batches)
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            step += 1
        point_started = time.perf_counter()
        estimate = noise_scale.estimate(model, loss_fn, measure_batches, args.small_batch, args.measurements)
        train_loss = statistics.fmean(losses) if losses else None
        losses = []
        points.append({
            "steps": step, "examples_seen": step * batch_size, "train_loss": train_loss,
            "gradient_sq": estimate.gradient_sq, "trace": estimate.trace,
            "b_simple": _finite(estimate.b_simple), "stderr": _finite(estimate.stderr),
        })
        print(_point_line(points[-1], time.perf_counter() - point_started), flush=True)
    sizes = spec.search_space.batch_sizes()
    critical = points[-1]["b_simple"]
    low, high = noise_scale.critical_range(critical) if critical else (None, None)
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "batch_size": batch_size, "lr": lr, "effective_lr": step_lr, "momentum": momentum,
        "train_examples": steps * batch_size, "augmentation": True, "seed": args.seed,
        "small_batch": args.small_batch, "big_batch": args.big_batch, "measurements": args.measurements,
        "points": points,
        "critical_batch_size": critical, "critical_stderr": points[-1]["stderr"],
        "suggested_range": [low, high] if critical else None,
        "suggested_batch_sizes": [b for b in sizes if low <= b <= high] if critical else [],
        "seconds": time.perf_counter() - started,
    }


def _point_line(point: dict[str, Any], seconds: float) -> str:
    where = "at initialization" if point["steps"] == 0 else f"after {point['examples_seen']:,} examples ({point['steps']} steps, train loss {point['train_loss']:.3f})"
    b_simple = (
        f"B_simple {point['b_simple']:,.0f} ± {point['stderr'] or math.nan:,.0f}" if point["b_simple"] is not None
        else "B_simple undefined (|G|^2 estimate not positive: more --measurements)"
    )
    return f"probe    {where}: |G|^2 {point['gradient_sq']:.4g}  tr(Sigma) {point['trace']:.4g}  {b_simple}  ({seconds:.1f} s)"


def prediction_lines(result: dict[str, Any]) -> list[str]:
    critical = result["critical_batch_size"]
    if critical is None:
        return ["no prediction: the last |G|^2 estimate is not positive; run again with more --measurements or a longer run."]
    low, high = result["suggested_range"]
    inside = ", ".join(f"{b:,}" for b in result["suggested_batch_sizes"]) or "none of the study's batch sizes"
    return [
        f"predicted critical batch size  B_crit ≈ B_simple = {critical:,.0f} ± {result['critical_stderr'] or math.nan:,.0f} "
        f"(after {result['train_examples']:,} examples)",
        f"suggested batch sizes to search  {low:,.0f} to {high:,.0f} (B_crit/8 to 2 B_crit): {inside}",
        "the noise scale grows as the loss falls, so over a full training run the critical batch size is likely larger.",
    ]


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = load_spec(args.study, {"name": args.study_name, "budget_examples": args.budget_examples, "dataset.path": args.data})
    batch_size = _check_args(args, spec)
    url = resolve_url(args.storage, spec.name, spec.storage)
    images = load_dataset(spec.dataset)
    _check_model(spec, images.num_classes, images.image_shape)
    study = create_or_resume(open_storage(url), spec, build_sampler(spec), build_pruner(spec))
    device, device_name = worker_device()
    print(f"study    {spec.name}  storage {redact(url)}  device {device_name}", flush=True)
    result = run_probe(spec, device_data(spec, images, device), images.num_classes, args, batch_size)
    key = f"{PROBE_PREFIX}{result['created']}"
    study.set_user_attr(key, result)
    print("\n".join(prediction_lines(result)))
    print(f"stored on study '{spec.name}' as user attribute '{key}' ({result['seconds']:.0f} s); "
          f"`python -m search.report --study {args.study}` draws it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
