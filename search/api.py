"""The Python API, for notebooks and scripts; every command is argument parsing plus one call here.

    from search import Study
    study = Study.from_file("studies/smoke.yaml", overrides={"budget_examples": 2048})
    study.run(n_trials=8)
    study.best(top=3)
    report = Study.open("smoke").analyze()     # everything the report says, as one object

Training (torch, Lightning) is imported inside the methods that train, so reading results
(`search.best`, `search.report`, the analysis) never loads it.

Everything a user can get wrong is checked before the storage is touched: the study file,
the data, the model, the budget, the database. Then the study is created (or resumed) once
and the workers (one per GPU, or the CPU) share it until the study-wide number of trials.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from search.analysis.evaluation import evaluation_results
from search.analysis.frontier import frontier_rows
from search.analysis.study_report import StudyReport, analyze
from search.config.load import load_spec, validate_spec
from search.config.spec import StudySpec
from search.config.trust import trusted_spec
from search.errors import EXIT_USER_ERROR, UserError
from search.measure.profile import SpeedProfile
from search.record import ProbeResult, TrialRecord
from search.render.console import (
    Progress,
    evaluation_line,
    evaluation_summary_line,
    print_header,
    summary,
)
from search.render.page import write_report
from search.store import measurements
from search.store.artifacts import (
    artifact_folder,
    study_artifact_folder,
    upload_figures,
)
from search.store.folders import check_writable_folder
from search.store.storage import create_or_resume, open_storage, stored_spec
from search.store.trials import (
    EVALUATION_SUFFIX,
    TrialRow,
    completed,
    connect,
    find,
    load,
    locate,
    state_counts,
    without_superseded,
)
from search.store.urls import RESULTS_DIR, STORAGE_ENV, backend, redact, resolve_url
from search.study.pruners import build_pruner
from search.study.shutdown import STOP
from search.study.space import build_sampler

if TYPE_CHECKING:  # training modules are imported where they train (see the module docstring)
    from search.measure.probe import ProbeRun, ProbeSettings

class Study:
    """A study: what it trains (its spec) and where its trials are stored (a database URL).

    `from_file` is a study to run; `open` is a stored study to read, report on, evaluate or measure,
    named by its study file or by its name in the storage."""

    def __init__(self, spec: StudySpec | None, storage: str | None = None, name: str | None = None, source: str | None = None) -> None:
        if spec is None and name is None:
            raise ValueError("a Study needs its spec or its name")
        self._spec = spec
        self.name: str = spec.name if spec is not None else name  # type: ignore[assignment]
        self.url = resolve_url(storage, self.name, spec.storage if spec is not None else None)
        self._source = source  # the study file or name it was opened by
        self._file_spec = spec  # the study file the user named, if they named one: the only source of user code

    @classmethod
    def from_file(cls, study: str | Path, storage: str | None = None, overrides: dict[str, Any] | None = None) -> Study:
        """A study file (a path, or a name in studies/), with study-file keys overridden by
        dotted name, e.g. {"budget_examples": 20000, "dataset.path": "cifar10.tar.gz"}."""
        return cls(load_spec(str(study), overrides), storage)

    @classmethod
    def open(cls, study: str, storage: str | None = None, study_name: str | None = None) -> Study:
        """A stored study, by its study file or its name in the storage (resolved as `search.run` resolves them);
        `study_name`: the name it was run under (`search.run --study-name`), when a study file is given."""
        name, url = locate(study, storage)
        name = study_name or name
        opened = cls(None, url, name, source=study)
        opened._file_spec = _study_file_spec(study)
        return opened

    @property
    def spec(self) -> StudySpec:
        """The spec: from the study file, or the one stored with the study (its user code only from a named study file)."""
        if self._spec is None:
            self._spec = self._stored_spec(self.optuna_study(), None)
        return self._spec

    def _stored_spec(self, study: optuna.Study, data: str | None) -> StudySpec:
        """The spec stored with `study`, safe to build its model from (`search.config.trust`)."""
        return trusted_spec(stored_spec(study, data), self._file_spec, study.study_name)

    def with_settings(self, **settings: Any) -> Study:
        """The same study with top-level settings changed (validated again), e.g. n_trials=8."""
        raw = {**self.spec.model_dump(mode="json"), **{k: v for k, v in settings.items() if v is not None}}
        return Study(validate_spec(raw, source=f"study '{self.spec.name}'"), self.url)

    def run(self, n_trials: int | None = None, workers: int | str = 1, quiet: bool = False, speed_profile: bool = True) -> int:
        """Run (or resume) the study until `n_trials` finished trials study-wide; returns the
        exit code (0, or 130/143 when interrupted: run again to resume)."""
        if n_trials is not None:
            return self.with_settings(n_trials=n_trials).run(workers=workers, quiet=quiet, speed_profile=speed_profile)
        import torch

        from search.data.source import load_data
        from search.study.launch import describe_workers, spawn_workers, worker_count
        from search.study.measured import (
            check_budget_profile,
            device_profile,
            share_probes,
        )
        from search.study.worker import run_worker
        from search.train.curves import check_logger
        from search.train.device import worker_device
        from search.train.model import check_model

        spec, url = self.spec, self.url
        check_logger(spec.logging, spec.name)  # a logger's missing package: one paragraph, before anything is stored
        count = worker_count(str(workers))
        if backend(url) == "sqlite" and count > 1:
            raise UserError(
                f"The embedded SQLite storage supports one worker, and {count} were asked for. For several workers "
                f"use PostgreSQL: --storage postgresql+psycopg2://user@host/db (see docker-compose.yml), or --workers 1."
            )
        pruner = build_pruner(spec)
        _check_output_folders(spec, url)
        # One worker trains in this process on its device; several get their own (this one only checks, on the CPU).
        device = worker_device()[0] if count == 1 else torch.device("cpu")
        data = load_data(spec, device)
        check_model(spec, data)
        with _removed_if_refused(url):
            storage = open_storage(url)
            if spec.budget_seconds is not None and count == 1:
                # Steps come from this device's profile: a budget too short for it is refused before the study exists.
                existing = find(storage, spec.name)
                profile = device_profile(storage, existing, spec, data, worker_device()[1], measure_if_missing=speed_profile)
                check_budget_profile(spec, profile, worker_device()[1], warn=False)  # the worker warns
            study = create_or_resume(storage, spec, build_sampler(spec), pruner, data_fingerprint=data.fingerprint)
        share_probes(study, spec, data.fingerprint)
        print_header(spec, url, data.describe(), describe_workers(count))
        short = spec.short_of_budget()
        if short:
            print(
                f"warning  the budget ({spec.budget_examples:,}) is not a multiple of every batch size: "
                + ", ".join(f"B={b} trains {seen:,} examples ({seen / spec.budget_examples:.1%})" for b, seen in short)
                + "; compare them knowing that, or use a budget that is a multiple of the largest batch size",
                flush=True,
            )
        if count == 1:
            STOP.install()
            code = run_worker(spec, url, data=data, speed_profile=speed_profile, progress=Progress(spec, quiet))
        else:
            storage.engine.dispose()  # no pooled connection may cross into the workers
            code = spawn_workers(spec, url, count, quiet, speed_profile)
        try:
            print(summary(analyze(study), study, redact(url)), flush=True)
        except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError):
            # The workers have said why (a lost database); what they finished is stored.
            print(f"the storage {redact(url)} cannot be read now, so no summary; `python -m search.best` shows the study later", file=sys.stderr)
            code = code or EXIT_USER_ERROR
        return code

    def optuna_study(self) -> optuna.Study:
        """The stored Optuna study (for Optuna's own API and plots); an unknown study is a UserError."""
        return load(connect(self.url), self.name, self.url)

    def describe(self) -> str:
        """One line: the study, its storage (password hidden) and its trials by state."""
        trials = self.optuna_study().get_trials(deepcopy=False)
        return f"study {self.name}  storage {redact(self.url)}  {len(trials)} trials: {state_counts(trials)}"

    def best(self, top: int = 5) -> list[TrialRow]:
        """The `top` completed trials, lowest final validation loss first (the `search_trials` view's rows)."""
        if top < 1:
            raise UserError(f"--top must be at least 1 (got {top}): it is how many of the best trials to list.")
        return [TrialRow.of(trial) for trial in completed(self.optuna_study())[:top]]

    def analyze(self, target_loss: float | None = None) -> StudyReport:
        """Everything the service concludes about the study (and its test-set runs), as one object."""
        study = self.optuna_study()
        return analyze(study, find(connect(self.url), self.name + EVALUATION_SUFFIX), target_loss)

    def frontier(self) -> StudyReport:
        """A frontier study's report (its `frontier` rows and `recommendation`); a joint study is a UserError."""
        if not any(TrialRecord.of(t).frontier_role for t in self.optuna_study().get_trials(deepcopy=False)):
            raise UserError(
                f"Study '{self.name}' has no frontier trials: --frontier reads a `strategy: frontier` study. Use search.best "
                f"without --frontier for this one, or run a frontier study (docs/method.md, \"The frontier\")."
            )
        return self.analyze()

    def report(self, out: Path | None = None, target_loss: float | None = None) -> tuple[StudyReport, Path]:
        """Write report.html, its figures and summary.json into `out` (default results/<study>-report) and upload
        the figures as study artifacts for optuna-dashboard; returns the report and the page."""
        study = self.optuna_study()
        completed(study)  # no completed trial: nothing to report, said in one paragraph
        out = out or RESULTS_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self.name)}-report"
        check_writable_folder(out, "report folder (--out)", "Give a writable folder with --out.")
        report = self.analyze(target_loss)
        page = _write_whole(out, lambda folder: write_report(report, study, self.url, folder))
        _upload_figures(study, self.url, out, page)
        return report, page

    def evaluate(self, top: int = 3, seeds: int = 3, data: str | None = None, from_checkpoint: bool = False) -> int:
        """Retrain the `top` best configurations with `seeds` seeds each and measure them on the test split (or, with
        `from_checkpoint`, measure their kept weights); returns the exit code (1 if a run failed)."""
        if top < 1 or seeds < 1:
            raise UserError(f"--top and --seeds must be at least 1 (got --top {top} --seeds {seeds}).")
        from search.study import evaluation
        from search.train.curves import check_logger

        storage = connect(self.url)
        source = load(storage, self.name, self.url)
        spec = self._stored_spec(source, data)
        check_logger(spec.logging, spec.name)  # before the evaluation study is created
        chosen = completed(source)[:top]
        failed = 0
        STOP.install()  # a signal stops after the current run, as search.run does

        def shown(run: optuna.trial.FrozenTrial) -> None:
            nonlocal failed
            failed += run.state != optuna.trial.TrialState.COMPLETE
            print(evaluation_line(run), flush=True)

        if from_checkpoint:
            code = evaluation.from_checkpoint(storage, source, spec, chosen, shown)
            return _stopped("search.evaluate --from-checkpoint") or code
        runs = evaluation.retrain(storage, source, spec, chosen, seeds, shown)
        if STOP:
            return _stopped("search.evaluate")
        numbers = {t.number for t in chosen}
        for result in evaluation_results(chosen, runs.get_trials(deepcopy=False)):
            if result.source_trial in numbers:
                print(evaluation_summary_line(result))
        return 1 if failed else 0

    def probe(self, settings: ProbeSettings | None = None) -> ProbeResult:
        """Measure B_simple along a run of the study's model (its frontier's tuned smallest batch size when it has one)
        and keep the result for the study, its model and its data."""
        from search.data.source import load_data
        from search.measure.probe import (
            ProbeSettings,
            normalization_group,
            run_probe,
            untuned_run,
        )
        from search.train.device import worker_device
        from search.train.model import check_model

        settings = settings or ProbeSettings()
        spec = self.spec
        device, device_name = worker_device()
        data = load_data(spec, device)
        group = normalization_group(spec, check_model(spec, data))
        settings = settings.for_group(group)
        storage = open_storage(self.url)
        sizes = spec.search_space.batch_sizes()
        middle = sizes[len(sizes) // 2]
        run = _tuned_run(spec, storage, settings.batch_size) or untuned_run(spec, middle if settings.batch_size is None else settings.batch_size)
        settings = settings.for_run(spec, run)
        print(f"study    {spec.name}  storage {redact(self.url)}  device {device_name}", flush=True)
        result = run_probe(spec, data, settings, run, group)
        measurements.save_probe(storage, spec, data.fingerprint, result)
        return result

    def speed(self, data: str | None = None) -> SpeedProfile:
        """Measure this device's speed profile of the study's model and keep it for the model and data (and on the
        study, if it exists: its later trials use the new rates)."""
        from search.data.source import load_data
        from search.measure.speed import measure, profile_sizes
        from search.train.device import worker_device

        storage = open_storage(self.url)
        study = find(storage, self.name)
        if study is not None:
            spec = self._stored_spec(study, data)
        elif self._spec is not None:
            spec = self._spec
            if data is not None and spec.dataset is not None:
                spec = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"path": data})})
        else:
            spec = load_spec(self._source or self.name, {"dataset.path": data})
        device, device_name = worker_device()
        loaded = load_data(spec, device)
        print(f"measuring {spec.model.describe()} on {device_name}, batch sizes {', '.join(map(str, profile_sizes(spec)))} ...", flush=True)
        profile = measure(spec, loaded, device_name)
        measurements.save_profile(storage, measurements.subject(spec, loaded.fingerprint), profile)
        if study is not None:
            measurements.store_profile(study, profile)  # replaces the study's copy: later trials use the new rates
        return profile


def _check_output_folders(spec: StudySpec, url: str) -> None:
    """Every folder the run writes into (the SQLite file's, the logs', the kept weights'), checked before anything is stored."""
    where = "Point it elsewhere (a writable folder), or run from a writable working directory."
    if backend(url) == "sqlite":
        check_writable_folder(Path(str(make_url(url).database)).parent, "storage folder", "Give --storage sqlite:///WRITABLE/PATH.sqlite3 (or "
                              f"${STORAGE_ENV}); on a read-only file system, a mounted volume.")
    if spec.logging.logger != "none":
        logs = Path(spec.logging.dir).expanduser() if spec.logging.dir else RESULTS_DIR / spec.name / "logs"
        check_writable_folder(logs, "log folder (logging.dir)", where)
    folder = artifact_folder(spec.name, url, spec.checkpoints.dir)
    if spec.checkpoints.keep != "none" and folder is not None:
        check_writable_folder(folder, "folder for kept weights (checkpoints.dir)", where)


@contextlib.contextmanager
def _removed_if_refused(url: str) -> Iterator[None]:
    """An SQLite file this run creates is removed again when the run is refused before its study exists, unless it
    already keeps something worth keeping (a speed profile measured on the way to the refusal)."""
    database = Path(str(make_url(url).database)) if backend(url) == "sqlite" else None
    new = database is not None and not database.exists()
    try:
        yield
    except UserError:
        if new and database is not None and database.exists():
            kept = False
            with contextlib.suppress(Exception):
                kept = bool(optuna.get_all_study_names(open_storage(url)))
            if not kept:
                with contextlib.suppress(OSError):
                    database.unlink()
        raise


def _stopped(command: str) -> int:
    """0, or after a signal: say so and return the shell's exit code for it (130 for SIGINT, 143 for SIGTERM)."""
    if not STOP:
        return 0
    print(f"{STOP.reason}: stopped after the current run; run the same {command} again to carry on.", file=sys.stderr, flush=True)
    return STOP.exit_code


def _study_file_spec(study: str) -> StudySpec | None:
    """The spec of the study file `study` names (a path, or a name in studies/), or None when it names none."""
    try:
        return load_spec(study.partition(":")[0])
    except UserError:
        return None


def _tuned_run(spec: StudySpec, storage: optuna.storages.BaseStorage, batch_size: int | None) -> ProbeRun | None:
    """The frontier's best configuration at `batch_size` (default: its smallest); None without a frontier."""
    from search.measure.probe import ProbeRun

    study = find(storage, spec.name)
    if study is None:
        return None
    rows = {row.batch_size: row for row in frontier_rows(without_superseded(study.get_trials(deepcopy=False)))}
    row = rows.get(batch_size) if batch_size else (rows[min(rows)] if rows else None)
    if row is None:
        return None
    source = f"tuned: the frontier's best at batch size {row.batch_size:,} (search trial {row.source_trial}, re-run with {row.n_seeds} seeds)"
    return ProbeRun(row.batch_size, row.lr, row.momentum, row.effective_lr, source, tuned=True)


def _write_whole(out: Path, write: Callable[[Path], Path]) -> Path:
    """Write a report into a temporary folder beside `out`, then move its files in: a failure (a full disk, a folder where
    a file should go) leaves `out` as it was, never half a report. Returns the page's path in `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        written = write(staging)
        files = sorted(staging.iterdir())
        blocked = [f.name for f in files if (out / f.name).is_dir()]
        if blocked:
            raise UserError(f"The report folder {out} holds folders named {', '.join(blocked)}, where the report's files go. Remove them or give another --out.")
        out.mkdir(exist_ok=True)
        for file in files:
            os.replace(file, out / file.name)
        return out / written.name
    except OSError as error:
        raise UserError(f"Cannot write the report into {out}: {error.strerror or error}. Free some space or give another --out.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _upload_figures(study: optuna.Study, url: str, out: Path, page: Path) -> None:
    """The page's figures (its <img> files), as study artifacts for optuna-dashboard; a failure here is a note, not an error."""
    folder = study_artifact_folder(study, url)
    if folder is None:
        print("figures not uploaded to the dashboard: a PostgreSQL study has an artifact store only with checkpoints.dir "
              "(a folder every worker reaches) in its study file.", file=sys.stderr)
        return
    figures = [out / name for name in re.findall(r'<img src="([^"/]+\.png)"', page.read_text(encoding="utf-8"))]
    try:
        names = upload_figures(study, url, folder, figures)
    except (UserError, OSError) as error:
        print(f"figures not uploaded to the dashboard: {error}", file=sys.stderr)
        return
    print(f"dashboard: {len(names)} figures uploaded as artifacts of study '{study.study_name}' (store {folder})")
