"""What trials keep: the final weights of the k best completed trials (bounded, also with two
workers on PostgreSQL), `search.evaluate --from-checkpoint`, and the report's figures as study
artifacts for optuna-dashboard. Real training on tiny synthetic studies, real subprocesses."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import optuna
import pytest
import sqlalchemy
import torch
import yaml
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState, create_trial

from search.config.load import load_spec
from search.data.source import load_data
from search.record import EvaluationRecord, TrialRecord
from search.store.artifacts import CheckpointKeeper, StudyLock
from search.store.storage import open_storage
from search.train.model import build_model, training_step
from tests.conftest import SMALL_STUDY, Background, create_study, merge, run_cli

K = 2
FAST: dict[str, Any] = {"diagnostics": {"enabled": False}, "logging": {"logger": "none"}}


def _weight_files(folder: Path) -> list[Path]:
    """Artifacts are named by UUID; the SQLite lock file starts with a dot."""
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


def _kept(study: optuna.Study) -> dict[int, str]:
    return {t.number: path for t in study.trials if (path := TrialRecord.of(t).checkpoint_path)}


@pytest.fixture(scope="module")
def sqlite_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished SQLite study: 5 trials, the second diverged (so pruned), k = 2 weights kept in the default folder."""
    root = tmp_path_factory.mktemp("checkpoints")
    name = f"ck_{uuid.uuid4().hex[:8]}"
    spec = merge(SMALL_STUDY, {
        **FAST, "name": name, "n_trials": 5, "checkpoints": {"k": K}, "pruner": {"name": "none", "args": {}},
        "search_space": {"lr": {"low": 0.01, "high": 1e6, "log": True}},
    })
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    url = f"sqlite:///{root / 'study.sqlite3'}"
    study = create_study(url, load_spec(str(path)))
    for batch_size, lr, momentum in ((16, 0.3, 0.9), (16, 1e6, 0.9), (32, 0.2, 0.8), (64, 0.1, 0.7), (16, 0.05, 0.6)):
        study.enqueue_trial({"batch_size": batch_size, "lr": lr, "momentum": momentum})
    result = run_cli("search.run", "--study", str(path), "--storage", url, "--skip-speed-profile", cwd=root)
    assert result.returncode == 0, result.stderr
    return {"root": root, "name": name, "path": path, "url": url, "folder": root / name / "artifacts"}


@pytest.mark.slow
def test_the_k_best_completed_trials_keep_their_weights_and_no_other(sqlite_study: dict[str, Any]) -> None:
    study = optuna.load_study(study_name=sqlite_study["name"], storage=sqlite_study["url"])
    completed = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, t.number))
    assert len(completed) == 4 and study.trials[1].state == TrialState.PRUNED
    kept = _kept(study)
    assert set(kept) == {t.number for t in completed[:K]}  # pruned, and completed outside the k best: nothing
    folder = sqlite_study["folder"]  # default: next to the SQLite file, <folder>/<study>/artifacts
    assert sorted(_weight_files(folder)) == sorted(Path(p) for p in kept.values())
    for trial in study.trials:
        metas = get_all_artifact_meta(trial, storage=study._storage)
        # The artifact entry goes with the weights: optuna-dashboard never lists removed ones.
        assert [m.filename for m in metas] == ([f"trial_{trial.number}_weights.pt"] if trial.number in kept else [])
    spec = load_spec(str(sqlite_study["path"]))
    data = load_data(spec, torch.device("cpu"))
    model = build_model(spec, data)
    for path in kept.values():
        model.load_state_dict(torch.load(path, weights_only=True))  # a plain state dict of the study's model


def test_best_and_the_sql_views_show_where_the_weights_are(sqlite_study: dict[str, Any]) -> None:
    args = ("--study", sqlite_study["name"], "--storage", sqlite_study["url"])
    table = run_cli("search.best", *args, cwd=sqlite_study["root"])
    assert table.returncode == 0, table.stderr
    assert "weights" in table.stdout.splitlines()[1]
    rows = json.loads(run_cli("search.best", *args, "--format", "json", cwd=sqlite_study["root"]).stdout)
    paths = [row["checkpoint_path"] for row in rows]
    assert all(paths[:K]) and not any(paths[K:]) and all(p in table.stdout for p in paths[:K])
    assert all(Path(p).is_file() for p in paths[:K])
    csv = run_cli("search.best", *args, "--format", "csv", cwd=sqlite_study["root"]).stdout
    assert "checkpoint_path" in csv.splitlines()[0] and paths[0] in csv
    database = sqlite_study["url"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        viewed = dict(connection.execute("SELECT number, checkpoint_path FROM search_trials WHERE checkpoint_path IS NOT NULL"))
        best = connection.execute("SELECT number, checkpoint_path, checkpoint_artifact_id FROM search_best").fetchone()
    assert sorted(viewed.values()) == sorted(paths[:K])
    assert best[0] == rows[0]["number"] and best[1] == paths[0] and best[1].endswith(best[2])


@pytest.mark.slow
def test_evaluate_from_checkpoint_measures_the_kept_weights_without_retraining(sqlite_study: dict[str, Any]) -> None:
    args = ("--study", sqlite_study["name"], "--storage", sqlite_study["url"], "--top", str(K + 1), "--from-checkpoint")
    result = run_cli("search.evaluate", *args, cwd=sqlite_study["root"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("kept weights  test_loss") == K
    assert result.stdout.count("no kept weights") == 1  # the third best: outside the k best
    runs = optuna.load_study(study_name=sqlite_study["name"] + ":evaluation", storage=sqlite_study["url"]).trials
    assert len(runs) == K and all(r.state == TrialState.COMPLETE and not r.intermediate_values for r in runs)  # nothing trained
    source = optuna.load_study(study_name=sqlite_study["name"], storage=sqlite_study["url"])
    spec = load_spec(str(sqlite_study["path"]))
    test = load_data(spec, torch.device("cpu")).for_final_evaluation()
    for run in runs:
        record = EvaluationRecord.of(run)
        assert record.checkpoint_path == TrialRecord.of(source.trials[record.source_trial]).checkpoint_path
        model = build_model(spec, test)
        model.load_state_dict(torch.load(record.checkpoint_path, weights_only=True))
        step = training_step(spec, model.eval(), test.device)
        total = sum(float(step.evaluate(batch)[0]) for batch in test.val_batches())
        assert record.test_loss == pytest.approx(total / test.val_size, rel=1e-5) and record.test_images == test.val_size
    again = run_cli("search.evaluate", *args, cwd=sqlite_study["root"])
    assert again.returncode == 0 and again.stdout.count("kept weights  test_loss") == K
    assert len(optuna.load_study(study_name=sqlite_study["name"] + ":evaluation", storage=sqlite_study["url"]).trials) == K


@pytest.mark.slow
def test_report_uploads_its_figures_as_study_artifacts(sqlite_study: dict[str, Any]) -> None:
    args = ("--study", sqlite_study["name"], "--storage", sqlite_study["url"], "--out", str(sqlite_study["root"] / "report"))
    first = run_cli("search.report", *args, cwd=sqlite_study["root"])
    assert first.returncode == 0, first.stderr
    assert "figures uploaded as artifacts" in first.stdout
    study = optuna.load_study(study_name=sqlite_study["name"], storage=sqlite_study["url"])
    metas = {m.filename: m for m in get_all_artifact_meta(study)}
    for figure in ("best_per_batch_size.png", "lr_and_momentum.png", "loss_curves.png", "two_speeds_0.png"):
        assert metas[figure].mimetype == "image/png"
        stored = (sqlite_study["folder"] / metas[figure].artifact_id).read_bytes()
        assert stored == (sqlite_study["root"] / "report" / figure).read_bytes()
    again = run_cli("search.report", *args, cwd=sqlite_study["root"])
    assert again.returncode == 0, again.stderr
    replaced = {m.filename: m.artifact_id for m in get_all_artifact_meta(study)}
    assert replaced == {name: m.artifact_id for name, m in metas.items()}  # each figure once, replaced in place
    assert len(_weight_files(sqlite_study["folder"])) == K + len(metas)


def _write(path: Path) -> None:
    path.write_bytes(b"weights")


def test_a_failed_trial_that_held_weights_loses_them_and_its_retry_inherits_none(tmp_path: Path) -> None:
    """A worker that died between its upload and the end of its trial: the next ranking removes the
    weights, and every record of them (the retried trial's inherited attributes included)."""
    url = f"sqlite:///{tmp_path / 'keeper.sqlite3'}"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="keeper")
    folder = tmp_path / "keeper" / "artifacts"
    keeper = CheckpointKeeper(folder, 2, StudyLock(url, "keeper", folder), storage.engine)

    first = study.ask()
    assert keeper.keep(first, 1.0, _write) is not None
    study.tell(first, 1.0)
    dying = study.ask()
    held = keeper.keep(dying, 0.5, _write)
    assert held is not None and len(_weight_files(folder)) == 2
    study.tell(dying, state=TrialState.FAIL)
    lost = study.trials[dying.number]
    study.add_trial(create_trial(state=TrialState.WAITING, user_attrs=lost.user_attrs, system_attrs=lost.system_attrs))
    retry = study.ask()  # the queued retry, with its predecessor's attributes
    assert TrialRecord.of(study.trials[retry.number]).checkpoint_path == str(held)
    assert keeper.keep(retry, 3.0, _write) is not None  # 2nd best of {1.0, 3.0}: the failed trial does not rank
    study.tell(retry, 3.0)
    assert not held.exists() and len(_weight_files(folder)) == 2
    trials = optuna.load_study(study_name="keeper", storage=url).trials
    assert TrialRecord.of(trials[dying.number]).checkpoint_path is None
    assert not get_all_artifact_meta(trials[dying.number], storage=storage)
    assert TrialRecord.of(trials[retry.number]).checkpoint_path not in (None, str(held))
    better = study.ask()
    assert keeper.keep(better, 0.1, _write) is not None
    study.tell(better, 0.1)
    worse = study.ask()
    assert keeper.keep(worse, 9.0, _write) is None  # not among the 2 best: nothing written
    study.tell(worse, 9.0)
    final = optuna.load_study(study_name="keeper", storage=url).trials
    assert set(_kept(optuna.load_study(study_name="keeper", storage=url))) == {first.number, better.number}
    assert sorted(_weight_files(folder)) == sorted(Path(TrialRecord.of(final[n]).checkpoint_path) for n in (first.number, better.number))  # type: ignore[arg-type]


class _Peak:
    """The largest number of weight files seen in a folder while a run goes on."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak, self.seen, self._done = folder, 0, set[str](), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.is_set():
            files = _weight_files(self.folder)
            self.peak = max(self.peak, len(files))
            self.seen |= {f.name for f in files}
            time.sleep(0.01)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self.peak, len(_weight_files(self.folder)))


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_on_postgres_never_keep_more_than_k(study_file: Callable[..., Path], tmp_path: Path, postgres_url: str, drop_studies) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "shared" / "weights"
    path = study_file({**FAST, "n_trials": 8, "pruner": {"name": "none", "args": {}}, "checkpoints": {"k": K, "dir": str(folder)}})
    drop_studies(postgres_url, path.stem)
    peak = _Peak(folder)
    run = Background("search.run", "--study", str(path), "--workers", "2", "--storage", postgres_url, "--skip-speed-profile", "--quiet", cwd=tmp_path)
    code = run.wait(timeout=600)
    assert code == 0, run.output
    assert peak.stop() <= K and len(peak.seen) >= K  # the watcher saw the uploads, never more than k at once
    study = optuna.load_study(study_name=path.stem, storage=postgres_url)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2
    completed = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, t.number))
    kept = _kept(study)
    assert set(kept) == {t.number for t in completed[:K]}
    assert sorted(_weight_files(folder)) == sorted(Path(p) for p in kept.values())
    assert not (tmp_path / "results").exists()  # nothing beside the shared folder
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as connection:
        viewed = connection.execute(
            sqlalchemy.text("SELECT number FROM search_trials WHERE study_name = :name AND checkpoint_path IS NOT NULL"), {"name": path.stem},
        ).scalars().all()
        best = connection.execute(sqlalchemy.text("SELECT checkpoint_path FROM search_best WHERE study_name = :name"), {"name": path.stem}).scalar()
    engine.dispose()
    assert sorted(viewed) == sorted(kept) and best == kept[completed[0].number]
