"""Test-set evaluation (`search.evaluate`): the best configurations retrained from scratch and measured once, at
the end, on the held-out test split, or their kept weights measured without retraining.

The runs are trials of a second Optuna study, `<study>:evaluation`, in the same storage, so the search's
own trials, and its sampler's history, hold only what the search chose. Each retraining is the same run a
trial is (`run_training`).
"""
from __future__ import annotations

import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from search.config.spec import StudySpec
from search.data.slicing import batch_length
from search.data.source import TrialData, load_data
from search.errors import TrialFailed, UserError
from search.measure.profile import SpeedProfile, fastest_micro_batch
from search.record import EvaluationRecord, Hyperparams, StudyRecord, TrialRecord
from search.store.measurements import stored_profile
from search.store.trials import EVALUATION_SUFFIX
from search.store.urls import RESULTS_DIR
from search.store.views import ensure_views
from search.study import space
from search.study.reporting import ExamplesSeenReporter
from search.study.shutdown import STOP
from search.train.accumulation import (
    BatchSplitter,
    has_batch_norm,
    use_ghost_batch_norm,
)
from search.train.batch_norm import Recalibration
from search.train.curves import TrainingCurves, hyperparameters
from search.train.device import worker_device
from search.train.model import build_model, training_step
from search.train.plan import make_plan, warmup_steps
from search.train.run import run_training

optuna.logging.set_verbosity(optuna.logging.WARNING)


def evaluation_study(storage: optuna.storages.BaseStorage, source: optuna.Study, spec: StudySpec) -> optuna.Study:
    """`<study>:evaluation`, marked with its source study: the mark is how the `search_evaluation` view finds it."""
    ensure_views(storage)
    study = optuna.create_study(
        study_name=source.study_name + EVALUATION_SUFFIX, storage=storage, direction="minimize",
        load_if_exists=True, pruner=optuna.pruners.NopPruner(),
    )
    if StudyRecord.of(study).evaluation_of is None:
        StudyRecord(
            evaluation_of=source.study_name, budget_examples=spec.budget_examples,
            protocol="retrained on the whole training split with the search's example budget; value = test loss at the end",
        ).store(study)
    return study


def run_one(
    study: optuna.Study, source: FrozenTrial, seed: int, spec: StudySpec, data: TrialData, device_name: str, profile: SpeedProfile | None = None,
) -> FrozenTrial:
    """Retrain `source`'s configuration with `seed` and measure it on the test split, as one trial of `study`: the same run a
    trial is (`run_training`), out of memory marked on the evaluation trial. `profile`: this device's speed profile."""
    # The fixed sampler makes the trial's parameters those of the source trial, and space.sample
    # then derives the effective learning rate exactly as the search did.
    with warnings.catch_warnings():  # "experimental" since Optuna 2.4: nothing for our users to act on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.PartialFixedSampler(source.params, optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    try:
        started = time.perf_counter()
        hp = space.sample(trial, spec)
        splitter = BatchSplitter.for_study(spec, data, device_name)
        # The micro-batch a trial on this device trains with: the fastest of the study's speed profile, when it has one.
        fastest = fastest_micro_batch(profile, hp.batch_size) if profile else None
        plan = make_plan(spec, hp, seed, splitter.micro_batch_size(hp.batch_size, fastest))
        steps = plan.steps
        # Validation (here: the test split) only once, after the last step.
        plan = replace(plan, report_every_examples=plan.examples_after(steps))
        # Its curves beside the search's runs: results/<study>/logs/<study>/evaluation_<n>_trial_<source>_seed_<seed>.
        curves = TrainingCurves.create(
            spec.logging, spec.name, f"evaluation_{trial.number}_trial_{source.number}_seed_{seed}", RESULTS_DIR / spec.name,
            hyperparameters(hp, spec.optimizer.name, source_trial=source.number, seed=seed, steps=steps),
        )
        try:
            run = run_training(spec, data, plan, [ExamplesSeenReporter(trial)], curves, Recalibration(data, spec.batch_norm), splitter.prepare)
        except TrialFailed as failed:  # e.g. the user's code called sys.exit: this run fails, the others go on
            EvaluationRecord(source_trial=source.number, seed=seed, reason=str(failed)).store(trial)
            print(f"run failed: {failed}", file=sys.stderr, flush=True)
            return study.tell(trial, state=TrialState.FAIL)
        log, steps_done, train_seconds = run.log, run.steps_done, run.train_seconds
        examples_seen = plan.examples_after(steps_done)
        record = EvaluationRecord(
            source_trial=source.number, seed=seed, effective_lr=hp.effective_lr, schedule=hp.schedule,
            optimizer=spec.optimizer.name, steps=steps, warmup_steps=warmup_steps(plan.schedule_steps(), plan.batch_size, spec.schedule), examples_seen=examples_seen,
            budget_examples=spec.budget_examples, train_images=data.train_size, test_images=data.val_size,
            wall_seconds=time.perf_counter() - started, examples_per_second=examples_seen / max(train_seconds, 1e-9), device=device_name,
        )
        if log.checkpoints and not log.stop_reason:
            final = log.checkpoints[-1]
            record = replace(record, test_loss=final.val_loss, test_acc=final.val_acc, train_loss=final.train_loss)
        else:
            stopped = STOP.reason if log.stop_reason == "interrupted" else log.stop_reason
            reason = "out_of_memory" if run.out_of_memory else stopped or "no measurement"
            record = replace(record, reason=reason)
            if run.out_of_memory:
                print(f"out of memory at batch size {hp.batch_size:,}: {run.out_of_memory}", file=sys.stderr, flush=True)
        record.store(trial)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    if record.test_loss is not None:
        return study.tell(trial, record.test_loss)
    return study.tell(trial, state=TrialState.FAIL)


def measure_kept(study: optuna.Study, source: FrozenTrial, spec: StudySpec, data: TrialData, train_images: int, device_name: str) -> FrozenTrial:
    """Load `source`'s kept final weights and measure them on the test split (no training), as one trial of `study`."""
    kept = TrialRecord.of(source)
    assert kept.checkpoint_path is not None
    model = build_model(spec, data)
    if isinstance(kept.normalization_batch, int) and has_batch_norm(model):
        # Kept as trained, ghost batch norm included (keys `...norm.weight`); in eval mode it is plain batch norm.
        model = use_ghost_batch_norm(model, kept.normalization_batch)
    step = training_step(spec, model, data.device)
    if step.lightning:
        raise UserError(
            "--from-checkpoint measures with the study's loss, and this study's model is a LightningModule that computes its own "
            "(validation_step). Retrain instead: python -m search.evaluate without --from-checkpoint."
        )
    with warnings.catch_warnings():  # as in run_one: the evaluation trial gets the source trial's parameters
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.PartialFixedSampler(source.params, optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    try:
        started = time.perf_counter()
        hp = space.sample(trial, spec)
        # weights_only: tensors and plain containers only, never arbitrary pickled objects.
        model.load_state_dict(torch.load(kept.checkpoint_path, map_location="cpu", weights_only=True))
        model.to(data.device, memory_format=data.memory_format).eval()
        loss_sum, correct, examples = 0.0, 0.0, 0
        for batch in data.val_batches():
            batch_loss, batch_correct = step.evaluate(batch)
            loss_sum += float(batch_loss)
            correct += float(batch_correct) if batch_correct is not None else 0.0
            examples += batch_length(batch)
        record = EvaluationRecord(
            source_trial=source.number, seed=kept.seed, effective_lr=hp.effective_lr, schedule=hp.schedule,
            optimizer=spec.optimizer.name, steps=kept.steps, examples_seen=kept.examples_seen, budget_examples=spec.budget_examples,
            train_images=train_images, test_images=examples, train_loss=kept.train_loss, device=device_name,
            test_loss=loss_sum / max(examples, 1), test_acc=correct / max(examples, 1) if step.classifies else None,
            wall_seconds=time.perf_counter() - started, checkpoint_path=kept.checkpoint_path,
        )
        record.store(trial)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    return study.tell(trial, record.test_loss) if math.isfinite(record.test_loss) else study.tell(trial, state=TrialState.FAIL)  # type: ignore[arg-type]


def from_checkpoint(
    storage: optuna.storages.BaseStorage, source: optuna.Study, spec: StudySpec, chosen: list[FrozenTrial], on_run: Callable[[FrozenTrial], None],
) -> int:
    """`--from-checkpoint`: measure the kept weights of the chosen trials, each once (a rerun measures nothing twice)."""
    kept = {t.number for t in chosen if (path := TrialRecord.of(t).checkpoint_path) and Path(path).is_file()}
    if not kept:
        raise UserError(
            f"None of the top {len(chosen)} trials of study '{source.study_name}' has kept weights, so there is nothing to measure "
            "without retraining. Check the study file's checkpoints (keep: best_k; on PostgreSQL a shared checkpoints.dir), "
            "or retrain: python -m search.evaluate without --from-checkpoint."
        )
    device, device_name = worker_device()
    data = load_data(spec, device)
    test = data.for_final_evaluation()
    study = evaluation_study(storage, source, spec)
    done = {
        record.checkpoint_path: run
        for run in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (record := EvaluationRecord.of(run)).checkpoint_path
    }
    print(
        f"measuring the kept weights of {len(kept)} of the top {len(chosen)} trials of study '{source.study_name}' on "
        f"{test.val_size:,} test examples, without retraining; results in study '{study.study_name}'",
        flush=True,
    )
    failed = 0
    for trial in chosen:
        if trial.number not in kept:
            print(
                f"trial {trial.number:>4}  B={Hyperparams.of(trial).batch_size:>5}  no kept weights (only the best checkpoints.k completed "
                f"trials keep theirs, none with keep: none): retrain it with search.evaluate without --from-checkpoint",
                flush=True,
            )
            continue
        if STOP:
            break
        run = done.get(TrialRecord.of(trial).checkpoint_path) or measure_kept(study, trial, spec, test, data.train_size, device_name)
        failed += run.state != TrialState.COMPLETE
        on_run(run)
    return 1 if failed else 0


def retrain(
    storage: optuna.storages.BaseStorage, source: optuna.Study, spec: StudySpec, chosen: list[FrozenTrial], seeds: int,
    on_run: Callable[[FrozenTrial], None],
) -> optuna.Study:
    """Retrain each chosen configuration with `seeds` seeds on the whole training split and measure it on the test split;
    (configuration, seed) pairs already completed are not run again. Returns the evaluation study."""
    device, device_name = worker_device()
    data = load_data(spec, device).for_final_evaluation()
    study = evaluation_study(storage, source, spec)
    profile = stored_profile(source, device_name)
    done = {
        (record.source_trial, record.seed)
        for record in map(EvaluationRecord.of, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if record.checkpoint_path is None  # measured kept weights (--from-checkpoint), not retrained
    }
    pending = [(source_trial, seed) for source_trial in chosen for seed in range(seeds) if (source_trial.number, seed) not in done]
    rates = [r for r in (TrialRecord.of(t).examples_per_second for t in chosen) if r]
    per_run = spec.budget_examples / statistics.median(rates) if rates else None
    cost = f"; about {per_run * len(pending) / 60:,.1f} min at the search's {statistics.median(rates):,.0f} examples/s" if per_run else ""
    print(
        f"evaluating the top {len(chosen)} of study '{source.study_name}' with {seeds} seeds each: {len(pending)} runs of "
        f"{spec.budget_examples:,} examples to train{cost}; trained on all {data.train_size:,} training examples, measured on "
        f"{data.val_size:,} test examples; results in study '{study.study_name}'. Ctrl-C or SIGTERM stops after the current run.",
        flush=True,
    )
    for source_trial, seed in pending:
        if STOP:
            break
        on_run(run_one(study, source_trial, seed, spec, data, device_name, profile))
    return study
