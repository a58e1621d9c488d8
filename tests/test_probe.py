"""`python -m search.probe` on a real (tiny) study: stored estimates, the report, user errors."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import create_trial

from search import probe, report
from search.analysis.diagnostics import (
    diagnostics_summary,
    empirical_knee,
    latest_probe,
)
from search.analysis.per_batch_size import per_batch_size
from search.record import PROBE_PREFIX
from tests.conftest import REPO, run_cli

PROBE_ARGS = ["--train-examples", "64", "--points", "2", "--small-batch", "4", "--big-batch", "16", "--measurements", "4"]


def _probes(url: str, name: str) -> dict[str, dict]:
    attrs = optuna.load_study(study_name=name, storage=url).user_attrs
    return {k: v for k, v in attrs.items() if k.startswith(PROBE_PREFIX)}


def test_probe_stores_every_run_and_the_report_draws_it(study_file: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = study_file()
    url = f"sqlite:///{tmp_path / 'probe.sqlite3'}"
    searched = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", cwd=REPO)
    assert searched.returncode == 0, searched.stderr

    assert probe.main(["--study", str(path), "--storage", url, *PROBE_ARGS]) == 0
    output = capsys.readouterr().out
    assert "probe    at initialization" in output and output.count("probe    after") == 2
    assert "predicted critical batch size" in output or "no prediction" in output
    assert probe.main(["--study", str(path), "--storage", url, *PROBE_ARGS, "--seed", "1"]) == 0
    stored = _probes(url, path.stem)
    assert len(stored) == 2  # a second run adds, never overwrites
    first = stored[min(stored)]
    assert (first["batch_size"], first["small_batch"], first["big_batch"], first["measurements"]) == (32, 4, 16, 4)
    assert [p["examples_seen"] for p in first["points"]] == [0, 32, 64]
    assert all(p["trace"] > 0 for p in first["points"])
    assert latest_probe(optuna.load_study(study_name=path.stem, storage=url).user_attrs)["seed"] == 1

    out = tmp_path / "report"
    assert report.main(["--study", path.stem, "--storage", url, "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "gradient noise scale" in page and "B_simple" in page and "sharpness_and_gap.png" in page
    assert (out / "sharpness_and_gap.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--small-batch", "16", "--big-batch", "24"], "multiple"), (["--train-examples", "8"], "--train-examples")],
)
def test_bad_probe_settings_exit_2(study_file: Callable[..., Path], tmp_path: Path, extra: list[str], message: str) -> None:
    result = run_cli("search.probe", "--study", str(study_file()), "--storage", f"sqlite:///{tmp_path / 'x.sqlite3'}", *extra, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.sqlite3").exists()


def _trial(batch_size: int, loss: float, sharpness: float) -> optuna.trial.FrozenTrial:
    return create_trial(
        params={"batch_size": batch_size, "lr": 0.1, "momentum": 0.9},
        distributions={
            "batch_size": CategoricalDistribution([64, 128, 256, 512]), "lr": FloatDistribution(0.01, 1.0), "momentum": FloatDistribution(0.5, 0.99),
        },
        value=loss, user_attrs={"sharpness": sharpness, "generalization_gap": loss / 10, "effective_lr": 0.1},
    )


def test_knee_and_agreement_with_the_prediction() -> None:
    trials = [_trial(64, 1.00, 10.0), _trial(128, 1.04, 20.0), _trial(256, 1.20, 40.0), _trial(512, 1.8, 80.0)]
    results = per_batch_size(trials)
    assert empirical_knee(results) == 128  # 1.04 is within 5% of 1.00, 1.20 is not
    probe_result = {"critical_batch_size": 200.0, "suggested_range": [25.0, 400.0], "train_examples": 8192, "batch_size": 256}
    lines = diagnostics_summary(trials, results, probe_result)
    assert "is 128: within a factor 2 of the prediction" in lines[0]
    far = diagnostics_summary(trials, results, {**probe_result, "critical_batch_size": 1000.0})
    assert "not within a factor 2 of the prediction, smaller" in far[0]
    assert any("Sharpness" in line and "10 at batch size 64 and 40 at 256" in line for line in lines)
