"""Results: search.best, the SQL views, search.report, search.evaluate and search.dashboard.

Each command runs against a real tiny study (synthetic data, a tiny CNN, a few seconds) stored
in SQLite and in the local PostgreSQL (database `test`; $SEARCH_TEST_POSTGRES overrides the
URL, as in conftest). Every PostgreSQL study gets a unique name and is deleted afterwards.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import optuna
import psycopg2
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from PIL import Image
from sqlalchemy.engine import make_url

from search import best, dashboard, evaluate, report
from search.analysis.evaluation import mean_and_spread, mean_spread_text
from search.analysis.per_batch_size import WELL_EXPLORED, per_batch_size
from search.analysis.pruning import pruning_savings
from search.analysis.scaling import fit_exponent, lr_fits
from search.analysis.summary import summary_lines
from search.config.load import load_spec
from search.data.batches import DeviceData
from search.data.images import ImageData
from search.errors import EXIT_USER_ERROR
from search.store.storage import create_or_resume, open_storage
from search.store.views import VIEW_NAMES, create_views
from tests.conftest import POSTGRES_URL, REPO, run_cli

BATCH_SIZES = [16, 32, 64]
TRAIN_IMAGES, TEST_IMAGES = 400, 100

# Random sampling and a median pruner after four trials: several batch sizes complete, some trials are pruned.
STUDY_YAML = """
description: results tests
dataset: {name: synthetic, image_size: 8, num_classes: 4, train_examples: %d, test_examples: %d, val_size: 100}
model: {name: tiny_cnn, args: {width: 4}}
budget_examples: 1024
min_steps: 8
search_space:
  batch_size: %s
  lr: {low: 0.02, high: 0.5, log: true}
  momentum: {low: 0.5, high: 0.9}
sampler: {name: random, seed: 3}
pruner: {name: median, report_every_examples: 256, args: {n_startup_trials: 4}}
n_trials: 9
""" % (TRAIN_IMAGES, TEST_IMAGES, BATCH_SIZES)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


class Study:
    """A finished tiny study: its name, storage URL and study file."""

    def __init__(self, name: str, url: str, path: Path) -> None:
        self.name, self.url, self.path = name, url, path

    def load(self, suffix: str = "") -> optuna.Study:
        return optuna.load_study(study_name=self.name + suffix, storage=self.url)

    def sql(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Plain SQL through the database's own driver, as a psql or sqlite3 user would run it."""
        return _plain_sql(self.url, query, params)


def _plain_sql(url: str, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connection: Any = sqlite3.connect(parsed.database)
        query = re.sub(r"%\((\w+)\)s", r":\1", query)
    else:
        connection = psycopg2.connect(
            host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database,
            options=parsed.query.get("options"),  # type: ignore[arg-type]
        )
    try:
        cursor = connection.cursor()
        cursor.execute(query, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        connection.close()


def _postgres_admin(statement: str) -> None:
    connection = psycopg2.connect(POSTGRES_URL.replace("+psycopg2", ""))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _storage_url(backend: str, directory: Path, name: str) -> str:
    return f"sqlite:///{directory / (name + '.sqlite3')}" if backend == "sqlite" else POSTGRES_URL


def _delete_studies(url: str, *names: str) -> None:
    existing = set(optuna.get_all_study_names(url))
    for name in names:
        if name in existing:
            optuna.delete_study(study_name=name, storage=url)


@pytest.fixture(scope="module", params=BACKENDS)
def study(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Study]:
    """One real study per back end, shared by the read-only tests of this module."""
    directory = tmp_path_factory.mktemp(request.param)
    name = _unique("results")
    path = directory / f"{name}.yaml"
    path.write_text(STUDY_YAML)
    url = _storage_url(request.param, directory, name)
    result = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", cwd=directory)
    assert result.returncode == 0, result.stderr
    yield Study(name, url, path)
    _delete_studies(url, name, name + ":evaluation")


def _completed_by_loss(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, t.number))


# -- search.best -----------------------------------------------------------------------------

@pytest.mark.slow
def test_the_study_has_what_the_results_need(study: Study) -> None:
    trials = study.load().get_trials()
    states = {t.state for t in trials}
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states, states
    assert len({t.params["batch_size"] for t in trials if t.state == TrialState.COMPLETE}) >= 2


def test_best_ranks_completed_trials_in_all_three_formats(study: Study, capsys: pytest.CaptureFixture[str]) -> None:
    expected = _completed_by_loss(study.load().get_trials())[:3]
    assert best.main(["--study", study.name, "--storage", study.url, "--top", "3", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in rows] == [t.number for t in expected]
    assert [r["rank"] for r in rows] == list(range(1, len(expected) + 1))
    for row, trial in zip(rows, expected):
        assert row["state"] == "COMPLETE"
        assert row["batch_size"] == trial.params["batch_size"]
        assert row["lr"] == pytest.approx(trial.params["lr"])
        assert row["effective_lr"] == pytest.approx(trial.user_attrs["effective_lr"])
        assert row["momentum"] == pytest.approx(trial.params["momentum"])
        assert row["final_val_loss"] == pytest.approx(trial.value)
        assert row["examples_seen"] == 1024 and row["steps"] == 1024 // row["batch_size"]
        assert row["wall_seconds"] > 0

    # The study file resolves the same study (its name and the --storage given).
    assert best.main(["--study", str(study.path), "--storage", study.url, "--top", "3", "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(r["number"]) for r in table] == [r["number"] for r in rows]
    assert float(table[0]["final_val_loss"]) == pytest.approx(rows[0]["final_val_loss"])

    assert best.main(["--study", study.name, "--storage", study.url, "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"study {study.name}") and "complete" in lines[0]
    assert lines[1].split()[:4] == ["rank", "trial", "batch", "lr"]
    assert [int(line.split()[1]) for line in lines[2:]] == [r["number"] for r in rows]


# -- the SQL views ---------------------------------------------------------------------------

def test_views_flatten_every_trial_and_pick_the_best(study: Study) -> None:
    trials = {t.number: t for t in study.load().get_trials()}
    rows = study.sql("SELECT * FROM search_trials WHERE study_name = %(name)s ORDER BY number", {"name": study.name})
    assert [r["number"] for r in rows] == sorted(trials)
    for row in rows:
        trial = trials[row["number"]]
        assert row["state"] == trial.state.name
        assert row["batch_size"] == trial.params["batch_size"]
        assert row["lr"] == pytest.approx(trial.params["lr"])
        assert row["momentum"] == pytest.approx(trial.params["momentum"])
        for column in ("effective_lr", "final_val_loss", "final_val_acc", "wall_seconds", "examples_per_second"):
            assert row[column] == pytest.approx(trial.user_attrs[column]), column
        assert row["examples_seen"] == trial.user_attrs["examples_seen"]
        assert row["steps"] == trial.user_attrs["steps"] and row["budget_examples"] == 1024
        assert row["device"] == trial.user_attrs["device"]
        assert row["reason"] == trial.user_attrs.get("reason")
        assert (row["value"] is None) == (trial.value is None)

    expected = _completed_by_loss(list(trials.values()))[0]
    best_rows = study.sql("SELECT number, batch_size, value FROM search_best WHERE study_name = %(name)s", {"name": study.name})
    assert best_rows == [{"number": expected.number, "batch_size": expected.params["batch_size"], "value": pytest.approx(expected.value)}]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_views_are_created_once_when_workers_start_together(backend: str, tmp_path: Path) -> None:
    """Six processes create the views at the same moment on an empty database: one does, none fails."""
    schema = _unique("views_race")
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'race.sqlite3'}"
    else:
        _postgres_admin(f"CREATE SCHEMA {schema}")
        url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        open_storage(url).engine.dispose()  # Optuna's tables, as search.run would have made them
        child = (
            "import pathlib, sys, time\n"
            "from search.store.storage import open_storage\n"
            "from search.store.views import create_views\n"
            "engine = open_storage(sys.argv[1]).engine\n"
            "engine.connect().close()\n"
            "pathlib.Path(sys.argv[2], 'ready' + sys.argv[3]).touch()\n"
            "while not pathlib.Path(sys.argv[2], 'go').exists(): time.sleep(0.002)\n"
            "print(create_views(engine))\n"
        )
        processes = [
            subprocess.Popen([sys.executable, "-c", child, url, str(tmp_path), str(i)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(6)
        ]
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready*"))) < len(processes):
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes), [p.communicate() for p in processes if p.poll() is not None]
            time.sleep(0.05)
        (tmp_path / "go").touch()
        outcomes = [p.communicate(timeout=120) for p in processes]
        assert all(p.returncode == 0 for p in processes), outcomes
        assert sorted(out.strip() for out, _ in outcomes) == ["False"] * 5 + ["True"]

        engine = open_storage(url).engine
        assert create_views(engine) is False  # idempotent
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP VIEW search_best")
        assert create_views(engine) is True  # a missing or outdated view is recreated
        for name in VIEW_NAMES:
            assert _plain_sql(url, f"SELECT count(*) AS n FROM {name}", {}) == [{"n": 0}]
        engine.dispose()
    finally:
        if backend == "postgresql":
            _postgres_admin(f"DROP SCHEMA {schema} CASCADE")


# -- search.report ---------------------------------------------------------------------------

def _images(page: Path) -> list[Path]:
    return [page.parent / src for src in re.findall(r'<img src="([^"]+)"', page.read_text())]


def test_report_writes_the_page_figures_and_a_summary_from_the_study(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main(["--study", study.name, "--storage", study.url, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    page = tmp_path / "report.html"
    text = page.read_text()
    images = _images(page)
    expected = {"best_per_batch_size.png", "lr_and_momentum.png", "loss_curves.png", "pruning.png", "two_speeds_0.png"}
    assert expected <= {image.name for image in images}
    assert "The two speeds" in text and "at a fixed number of examples" in printed
    for image in images:
        with Image.open(image) as png:
            assert png.format == "PNG" and png.width > 600 and png.height > 300

    trials = study.load().get_trials()
    done = _completed_by_loss(trials)
    winner = done[0]
    assert f"{winner.params['batch_size']:,}: {winner.value:.4f} (best of" in printed and "upper bounds" in printed
    assert "Pruning stopped" in printed and "saved" in printed
    # Every batch size is in the table with the best loss of its own completed trials.
    for size in BATCH_SIZES:
        own = [t for t in done if t.params["batch_size"] == size]
        cells = f"<td>{size}</td><td>{sum(t.params['batch_size'] == size for t in trials)}</td><td>{len(own)}</td>"
        assert cells + (f"<td>{own[0].value:.4f}</td>" if own else "<td>–</td>") in text
    # Few trials: the summary must say how little they support.
    thin = [b for b in BATCH_SIZES if 0 < sum(t.params["batch_size"] == b for t in done) < WELL_EXPLORED]
    assert ("fewer than 3 completed trials" in printed) == bool(thin)
    assert "python -m search.evaluate" in text  # not evaluated yet: the page says how


@pytest.mark.skipif(
    shutil.which("chromium") is None and not os.environ.get("CI"), reason="headless Chromium is not installed (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(study: Study, tmp_path: Path) -> None:
    assert report.main(["--study", study.name, "--storage", study.url, "--out", str(tmp_path)]) == 0
    shot = tmp_path / "screenshot.png"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
    ]
    page = (tmp_path / "report.html").as_uri()
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1280,8000", page], check=True, capture_output=True, timeout=120)
    pixels = torch.from_numpy(__import__("numpy").asarray(Image.open(shot).convert("RGB")).copy()).int()
    coloured = int(((pixels.max(2).values - pixels.min(2).values) > 60).sum())
    # The figures' coloured lines and markers; a page whose images failed to load has about 2,000.
    assert coloured > 20_000, coloured
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page], check=True, capture_output=True, text=True, timeout=120).stdout
    assert "What difference does batch size make?" in dom and dom.count("<img") == len(_images(tmp_path / "report.html")) >= 5


# -- search.evaluate -------------------------------------------------------------------------

@pytest.mark.slow
def test_evaluate_retrains_the_top_configurations_on_all_training_images(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    top = _completed_by_loss(study.load().get_trials())[:2]
    assert evaluate.main(["--study", study.name, "--storage", study.url, "--top", "2", "--seeds", "2"]) == 0
    runs = study.load(":evaluation").get_trials()
    assert sorted((r.user_attrs["source_trial"], r.user_attrs["seed"]) for r in runs) == sorted((t.number, s) for t in top for s in (0, 1))
    by_number = {t.number: t for t in top}
    for run in runs:
        source = by_number[run.user_attrs["source_trial"]]
        assert run.state == TrialState.COMPLETE
        assert run.params == source.params
        assert run.user_attrs["effective_lr"] == pytest.approx(source.user_attrs["effective_lr"])
        assert run.user_attrs["train_images"] == TRAIN_IMAGES and run.user_attrs["test_images"] == TEST_IMAGES
        assert run.user_attrs["examples_seen"] == 1024
        assert run.value == pytest.approx(run.user_attrs["test_loss"]) and 0 <= run.user_attrs["test_acc"] <= 1
        assert list(run.intermediate_values) == [1024]  # measured once, at the end

    rows = study.sql(
        "SELECT source_trial, seed, batch_size, test_loss, test_acc, state FROM search_evaluation WHERE source_study = %(name)s",
        {"name": study.name},
    )
    assert sorted((r["source_trial"], r["seed"]) for r in rows) == sorted((t.number, s) for t in top for s in (0, 1))
    assert {r["state"] for r in rows} == {"COMPLETE"}
    # The evaluation study is not a search study: it stays out of search_trials.
    assert study.sql("SELECT count(*) AS n FROM search_trials WHERE study_name = %(name)s", {"name": study.name + ":evaluation"}) == [{"n": 0}]

    # A rerun adds only what is missing: here a third seed.
    assert evaluate.main(["--study", study.name, "--storage", study.url, "--top", "2", "--seeds", "3"]) == 0
    assert len(study.load(":evaluation").get_trials()) == 6
    printed = capsys.readouterr().out
    assert printed.count("seed 0") == 2 and printed.count("seed 2") == 2

    assert report.main(["--study", study.name, "--storage", study.url, "--out", str(tmp_path)]) == 0
    summary = capsys.readouterr().out
    accuracies = [r.user_attrs["test_acc"] for r in study.load(":evaluation").get_trials() if r.user_attrs["source_trial"] == top[0].number]
    assert mean_spread_text(accuracies) in summary
    assert mean_spread_text(accuracies) in (tmp_path / "report.html").read_text()


def test_final_evaluation_data_trains_on_every_training_image_and_measures_on_the_test_split() -> None:
    generator = torch.Generator().manual_seed(0)
    train_images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8, generator=generator)
    test_images = torch.randint(0, 256, (7, 3, 8, 8), dtype=torch.uint8, generator=generator)
    images = ImageData(train_images, torch.arange(30) % 3, test_images, torch.arange(7) % 3, ("a", "b", "c"), "test", "fingerprint")
    # The search's split held 5 images out for validation; the final evaluation trains on all 30.
    data = DeviceData(images, torch.arange(25), torch.arange(25, 30), torch.device("cpu")).for_final_evaluation()
    assert torch.equal(data.train_images, train_images) and torch.equal(data.val_images, test_images)
    assert torch.equal(data.val_labels, torch.arange(7) % 3)
    # Normalization statistics come from the training images alone: nothing leaks from the test split.
    channel_means = train_images.double().mean((0, 2, 3)).float()
    assert torch.allclose(data.normalize.mean.flatten(), channel_means, atol=1e-4)


# -- search.dashboard ------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_dashboard_serves_the_study_and_its_trials(study: Study) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "search.dashboard", "--study", study.name, "--storage", study.url, "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                summaries = _get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not answer within 90 s"
                time.sleep(0.3)
        ours = [s for s in summaries if s["study_name"] == study.name]
        assert len(ours) == 1
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{ours[0]['study_id']}")
        trials = {t.number: t for t in study.load().get_trials()}
        assert sorted(t["number"] for t in detail["trials"]) == sorted(trials)
        for served in detail["trials"]:
            params = {p["name"]: p["param_external_value"] for p in served["params"]}
            assert int(params["batch_size"]) == trials[served["number"]].params["batch_size"]
            assert served["state"].upper() == trials[served["number"]].state.name
        assert [t["number"] for t in detail["best_trials"]] == [_completed_by_loss(list(trials.values()))[0].number]
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"Listening on http://127.0.0.1:{port}/" in output  # this machine only, by default


# -- errors a user can cause -----------------------------------------------------------------

COMMANDS = {
    "best": best.main,
    "report": report.main,
    "evaluate": evaluate.main,
    "dashboard": dashboard.main,
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unknown_study_and_unreachable_database_exit_2_with_one_paragraph(
    command: str, study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = COMMANDS[command]
    assert main(["--study", "no_such_study", "--storage", study.url]) == EXIT_USER_ERROR
    message = capsys.readouterr().err
    assert message.startswith("error: Study 'no_such_study' is not in") and study.name in message and "\n\n" not in message

    assert main(["--study", study.name, "--storage", "postgresql+psycopg2://postgres@127.0.0.1:1/test"]) == EXIT_USER_ERROR
    assert capsys.readouterr().err.startswith("error: Cannot open the study storage")

    missing = tmp_path / "absent.sqlite3"
    assert main(["--study", study.name, "--storage", f"sqlite:///{missing}"]) == EXIT_USER_ERROR
    assert "There is no study database" in capsys.readouterr().err and not missing.exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_study_without_completed_trials_exits_2(backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = _unique("unfinished")
    path = tmp_path / f"{name}.yaml"
    path.write_text(STUDY_YAML)
    url = _storage_url(backend, tmp_path, name)
    spec = load_spec(str(path))
    try:
        study = create_or_resume(open_storage(url), spec, optuna.samplers.RandomSampler(), optuna.pruners.NopPruner(), data_fingerprint=None)
        study.add_trial(create_trial(state=TrialState.PRUNED, params={"batch_size": 16}, distributions={"batch_size": CategoricalDistribution(BATCH_SIZES)}))
        for main in (best.main, report.main, evaluate.main):
            assert main(["--study", str(path), "--storage", url]) == EXIT_USER_ERROR
            assert "none has completed yet" in capsys.readouterr().err
    finally:
        _delete_studies(url, name)


# -- the analysis behind the summary ---------------------------------------------------------

def _trial(number: int, batch_size: int, effective_lr: float, momentum: float, loss: float) -> FrozenTrial:
    trial = create_trial(
        value=loss,
        params={"batch_size": batch_size, "lr": effective_lr, "momentum": momentum},
        distributions={
            "batch_size": CategoricalDistribution([16, 32, 64, 128, 256, 512]),
            "lr": FloatDistribution(1e-4, 100, log=True),
            "momentum": FloatDistribution(0.0, 0.99),
        },
        user_attrs={"effective_lr": effective_lr, "final_val_acc": 1 - loss / 4, "examples_seen": 4096},
    )
    trial.number = number
    return trial


def _scaled_study(exponent: float, losses: dict[int, float]) -> list[FrozenTrial]:
    """Three trials per batch size; the best one's learning rate is 0.01 * B^exponent."""
    trials = []
    for b, loss in losses.items():
        for k, (factor, extra) in enumerate(((1.0, 0.0), (3.0, 0.2), (0.3, 0.3))):
            trials.append(_trial(len(trials), b, 0.01 * b**exponent * factor, 0.9, loss + extra))
    return trials


def _summary(trials: list[FrozenTrial]) -> str:
    results = per_batch_size(trials)
    return " ".join(summary_lines(trials, results, lr_fits(results), pruning_savings(trials, 4096), []))


@pytest.mark.parametrize(("exponent", "words"), [(1.0, "linear scaling (1)"), (0.5, "square-root scaling (0.5)")])
def test_summary_labels_upper_bounds_and_names_the_scaling_rules_inside_the_interval(exponent: float, words: str) -> None:
    losses = {16: 1.20, 32: 1.10, 64: 1.000, 128: 1.005, 256: 1.15}
    text = _summary(_scaled_study(exponent, losses))
    assert "upper bounds on what a batch size can reach" in text and "64: 1.0000 (best of 3)" in text
    # The other draws are 20% and 30% worse than each best: every best is one draw, so nothing is ranked.
    assert "Batch sizes are not ranked: 16, 32, 64, 128, 256 have fewer than 3" in text and "within 1%" not in text
    assert f"grows as B^{exponent:.2f} (95% interval" in text and f"scaling rules inside the interval: {words}." in text
    assert "Left out" not in text and "No trial completed at batch sizes 512 (0 sampled)" in text


def test_batch_sizes_far_from_the_best_stay_out_of_the_exponent_fit() -> None:
    trials = _scaled_study(1.0, {16: 1.1, 32: 1.0, 64: 1.05, 128: 1.2})
    trials.append(_trial(len(trials), 512, 40.0, 0.6, 2.0))  # barely learned, at a wild learning rate
    text = _summary(trials)
    assert "grows as B^1.00 (95% interval" in text and "4 batch sizes); scaling rules inside the interval: linear scaling (1)." in text
    assert "Left out of that fit, as more than 25% worse than the best loss" in text and "batch size 512 (+100%)" in text
    assert "Batch sizes are not ranked" in text


def test_summary_is_honest_when_trials_are_few() -> None:
    one = _summary([_trial(0, 32, 0.1, 0.9, 1.0)])
    assert "Only batch size 32 has a completed trial" in one and "cannot yet say" in one
    assert "No trial completed at batch sizes 16 (0 sampled), 64 (0 sampled)" in one

    two = _summary([_trial(0, 32, 0.1, 0.9, 1.0), _trial(1, 128, 0.4, 0.9, 1.2)])
    assert "changes as B^1.00: a slope through two points, with no interval, so no scaling rule is named" in two
    assert "Batch sizes are not ranked: 32, 128 have fewer than 3" in two

    noisy = [_trial(i, b, lr, 0.9, 1.0 + i / 100) for i, (b, lr) in enumerate([(16, 0.5), (32, 0.01), (64, 2.0), (128, 0.02)])]
    assert "scaling rules inside the interval: linear scaling (1), square-root scaling (0.5), no scaling" in _summary(noisy)


def test_exponent_fit_recovers_a_power_law() -> None:
    fit = fit_exponent([(b, 0.003 * b**0.7) for b in (16, 64, 256, 1024)])
    assert fit is not None and fit.exponent == pytest.approx(0.7) and fit.stderr == pytest.approx(0, abs=1e-9)
    assert fit.lr_at(128) == pytest.approx(0.003 * 128**0.7)
    assert fit_exponent([(64, 0.1), (64, 0.2)]) is None
    assert math.isclose(mean_and_spread([1.0, 3.0])[1] or 0, math.sqrt(2))
