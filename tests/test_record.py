"""The typed trial record: what a trial stores, read back by every reader, without torch.

A regression study (a loss that is not a classification loss) stores no accuracy: best, the
report, the SQL views and the console must show it as absent, never fail.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from PIL import Image

from search import best, report
from search.analysis.evaluation import evaluation_results, mean_spread_text
from search.analysis.per_batch_size import per_batch_size
from search.analysis.pruning import pruning_savings
from search.analysis.scaling import lr_fits
from search.analysis.study_report import analyze
from search.analysis.summary import summary_lines
from search.record import EvaluationRecord, TrialRecord, column_kinds
from search.render.console import summary, trial_line
from search.store.storage import open_storage
from search.store.trials import TrialRow
from search.store.views import SEARCH_MARKER, create_views, view_statements
from tests.conftest import REPO

_SAMPLES = {"integer": 7, "real": 0.25, "text": "x"}


def _every_field() -> TrialRecord:
    return TrialRecord(**{name: _SAMPLES[kind] for name, kind in column_kinds(TrialRecord).items()})


def test_a_record_round_trips_through_its_attributes() -> None:
    record = _every_field()
    attrs = record.attrs()
    assert list(attrs) == list(TrialRecord.names()) and len(attrs) == len(record.names())
    assert TrialRecord.from_attrs({**attrs, "set_by_another_tool": 1}) == record  # unknown keys ignored
    partial = TrialRecord(reason="", effective_lr=0.1, normalization_batch="full")
    assert partial.attrs() == {"reason": "", "effective_lr": 0.1, "normalization_batch": "full"}  # None is not written
    assert TrialRecord.from_attrs(partial.attrs()).effective_lr == 0.1
    assert TrialRecord(retry_of=3).attrs() == {"retry_of": 3}
    with pytest.raises(TypeError):
        TrialRecord(**{"efective_lr": 0.1})  # a misspelt name fails where it is written


def test_the_record_is_written_to_and_read_from_an_optuna_trial(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.sqlite3'}")
    trial = study.ask()
    record = TrialRecord(reason="", effective_lr=0.05, steps=12, normalization_batch=16, optimizer="adamw", final_val_acc=None)
    record.store(trial)
    study.tell(trial, 1.0)
    (frozen,) = study.get_trials()
    assert frozen.user_attrs == record.attrs() and TrialRecord.of(frozen) == record


def test_trials_stored_before_the_optimizer_field_read_as_sgd() -> None:
    old = {"reason": "", "effective_lr": 0.1, "steps": 8, "final_val_loss": 1.2, "final_val_acc": 0.6}
    assert TrialRecord.from_attrs(old).optimizer == "sgd"
    assert TrialRecord.from_attrs({**old, "optimizer": "adamw"}).optimizer == "adamw"
    assert EvaluationRecord.from_attrs({"source_trial": 3}).optimizer == "sgd"


def test_non_finite_values_read_as_absent_like_the_views() -> None:
    record = TrialRecord(final_val_loss=float("nan"), best_val_loss=float("inf"), train_loss=1.5)
    finite = record.finite()
    assert finite.final_val_loss is None and finite.best_val_loss is None and finite.train_loss == 1.5


def test_the_views_have_a_column_per_record_field() -> None:
    trials, evaluation, best_view, frontier = view_statements("sqlite")
    for name in ("batch_size", "lr", "momentum", *TrialRecord.names()):
        assert f"AS {name}" in trials and f" {name}," in best_view, name
    for name in ("batch_size", *EvaluationRecord.names()):
        assert f"AS {name}" in evaluation, name
    for name in ("batch_size", "n_seeds", "val_loss_mean", "val_loss_ci95", "val_acc_mean", "val_acc_ci95", "effective_lr", "momentum", "steps"):
        assert name in frontier, name


def test_the_record_and_the_report_import_no_torch() -> None:
    code = (
        "import sys, search.record, search.report, search.best, search.store.views\n"
        "assert not {'torch', 'lightning'} & set(sys.modules), sorted(m for m in sys.modules if m.startswith(('torch', 'lightning')))[:5]"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- a regression study: no accuracy anywhere -------------------------------------------------

_DISTRIBUTIONS = {
    "batch_size": CategoricalDistribution([16, 32, 64]),
    "lr": FloatDistribution(0.01, 1.0, log=True),
    "momentum": FloatDistribution(0.5, 0.99),
}


def _regression_trial(batch_size: int, loss: float, state: TrialState = TrialState.COMPLETE) -> FrozenTrial:
    examples = 512 if state == TrialState.COMPLETE else 256
    record = TrialRecord(
        reason="" if state == TrialState.COMPLETE else "pruned at 256 examples", effective_lr=0.1 * batch_size / 32, steps=512 // batch_size,
        budget_examples=512, seed=batch_size, schedule="decay_lr", device="cpu (test)", optimizer="adamw", examples_seen=examples,
        wall_seconds=1.5, examples_per_second=400.0, train_loss=loss * 0.9, micro_batch_size=batch_size, normalization_batch=16,
        worker="host:1", train_seconds=1.2, final_val_loss=loss, best_val_loss=loss,
    )
    return create_trial(
        state=state, value=loss if state == TrialState.COMPLETE else None,
        params={"batch_size": batch_size, "lr": 0.1, "momentum": 0.9}, distributions=_DISTRIBUTIONS,
        intermediate_values={256: loss + 0.3, **({512: loss} if state == TrialState.COMPLETE else {})}, user_attrs=record.attrs(),
    )


@pytest.fixture
def regression_study(tmp_path: Path) -> tuple[str, str]:
    url = f"sqlite:///{tmp_path / 'regression.sqlite3'}"
    storage = open_storage(url)
    study = optuna.create_study(study_name="regression", storage=storage)
    study.set_user_attr(SEARCH_MARKER, "test")
    study.set_user_attr("budget_examples", 512)
    for trial in (_regression_trial(16, 0.30), _regression_trial(32, 0.25), _regression_trial(64, 0.40), _regression_trial(64, 0.9, TrialState.PRUNED)):
        study.add_trial(trial)
    # A trial stored before the optimizer field existed.
    old = _regression_trial(32, 0.28)
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=0.28, params=old.params, distributions=old.distributions,
        user_attrs={k: v for k, v in old.user_attrs.items() if k != "optimizer"},
    ))
    create_views(storage.engine)
    storage.engine.dispose()
    return "regression", url


def _sql(url: str, query: str) -> list[dict[str, Any]]:
    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        cursor = connection.execute(query)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        connection.close()


def test_best_shows_a_regression_study_without_accuracy(regression_study: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    name, url = regression_study
    assert best.main(["--study", name, "--storage", url, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["batch_size"] for r in rows] == [32, 32, 16, 64]
    assert all(r["final_val_acc"] is None and r["best_val_acc"] is None for r in rows)
    assert [r["optimizer"] for r in rows] == ["adamw", "sgd", "adamw", "adamw"]  # the old trial reads as sgd
    assert list(rows[0]) == ["rank", *TrialRow.columns()]
    assert best.main(["--study", name, "--storage", url, "--format", "csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split(",") == ["rank", *TrialRow.columns()]
    assert best.main(["--study", name, "--storage", url]) == 0
    table = capsys.readouterr().out.splitlines()
    val_acc = table[1].split().index("val_acc")
    assert all(line.split()[val_acc] == "-" for line in table[2:])


def test_the_views_show_a_regression_study_without_accuracy(regression_study: tuple[str, str]) -> None:
    name, url = regression_study
    rows = _sql(url, f"SELECT number, final_val_acc, optimizer, normalization_batch, final_val_loss FROM search_trials WHERE study_name = '{name}' ORDER BY number")
    assert [r["final_val_acc"] for r in rows] == [None] * 5
    assert [r["optimizer"] for r in rows] == ["adamw"] * 4 + [None]  # SQL reads what is stored
    assert {r["normalization_batch"] for r in rows} == {"16"}  # "full" or a number: read as text
    (top,) = _sql(url, f"SELECT batch_size, final_val_acc, value FROM search_best WHERE study_name = '{name}'")
    assert top == {"batch_size": 32, "final_val_acc": None, "value": 0.25}


def test_the_report_and_console_show_a_regression_study_without_accuracy(
    regression_study: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, url = regression_study
    assert report.main(["--study", name, "--storage", url, "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "32: 0.2500 (best of 2)" in printed and "upper bounds" in printed
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<td>32</td><td>2</td><td>2</td><td>0.2500</td><td>–</td>" in page  # best val acc absent
    assert (tmp_path / "report" / "best_per_batch_size.png").stat().st_size > 0
    with Image.open(tmp_path / "report" / "best_per_batch_size.png") as figure:  # one panel: no empty accuracy panel
        assert figure.size[0] < figure.size[1] * 2

    study = optuna.load_study(study_name=name, storage=url)
    lines = [trial_line(t) for t in study.get_trials()]
    assert "(pruned at 256 examples)" in lines[3] and "eff 0.1" in lines[1]
    assert "val_acc=-" in summary(analyze(study), study, url)


def test_test_set_runs_without_accuracy_are_summarized_by_their_loss() -> None:
    search = _regression_trial(32, 0.25)
    runs = [
        create_trial(
            value=loss, params=search.params, distributions=search.distributions,
            user_attrs=EvaluationRecord(source_trial=search.number, seed=seed, effective_lr=0.1, test_loss=loss).attrs(),
        )
        for seed, loss in enumerate((0.30, 0.32))
    ]
    (result,) = evaluation_results([search], runs)
    assert result.test_acc == [] and result.seeds == 2 and mean_spread_text(result.test_acc) == "–"
    results = per_batch_size([search])
    text = " ".join(summary_lines([search], results, lr_fits(results), pruning_savings([search], 512), [result]))
    assert "reaches test loss 0.3100 ± 0.0141" in text and "no accuracy" in text
