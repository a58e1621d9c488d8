"""`python -m search.probe` on a real (tiny) study: stored estimates, the report, user errors."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import create_trial

from search import probe, report
from search.analysis.diagnostics import MIN_CORRELATION_TRIALS, diagnostics_summary
from search.record import PROBE_PREFIX, latest_probe
from tests.conftest import REPO, run_cli

PROBE_ARGS = ["--train-examples", "64", "--points", "2", "--small-batch", "16", "--big-batch", "64", "--measurements", "4"]


def _probes(url: str, name: str) -> dict[str, dict]:
    attrs = optuna.load_study(study_name=name, storage=url).user_attrs
    return {k: v for k, v in attrs.items() if k.startswith(PROBE_PREFIX)}


@pytest.mark.slow
def test_probe_stores_every_run_and_the_report_draws_it(study_file: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = study_file()
    url = f"sqlite:///{tmp_path / 'probe.sqlite3'}"
    searched = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", cwd=REPO)
    assert searched.returncode == 0, searched.stderr

    assert probe.main(["--study", str(path), "--storage", url, *PROBE_ARGS]) == 0
    output = capsys.readouterr().out
    assert "probe    at initialization" in output and output.count("probe    after") == 2
    assert "B_simple = " in output or "no prediction" in output
    assert "learning rate held constant after warm-up" in output  # the default: annealing would shrink |G|^2
    assert probe.main(["--study", str(path), "--storage", url, *PROBE_ARGS, "--seed", "1", "--schedule", "study"]) == 0
    assert "with the study schedule (linear decay)" in capsys.readouterr().out
    stored = _probes(url, path.stem)
    assert len(stored) == 2  # a second run adds, never overwrites
    first = stored[min(stored)]
    assert (first["schedule"], stored[max(stored)]["schedule"]) == ("constant", "linear")
    assert (first["batch_size"], first["small_batch"], first["big_batch"], first["measurements"]) == (32, 16, 64, 4)
    assert [p["examples_seen"] for p in first["points"]] == [0, 32, 64]
    assert all(p["trace"] > 0 and p["b_simple_loss"] > 0 for p in first["points"])
    # A joint study has no tuned configuration: the run says so; tiny_cnn has no batch norm, so no groups.
    assert not first["tuned"] and first["hyperparams_from"].startswith("untuned")
    assert first["normalization_group"] is None and first["normalization"].startswith("no batch norm")
    assert latest_probe(optuna.load_study(study_name=path.stem, storage=url).user_attrs).seed == 1

    out = tmp_path / "report"
    assert report.main(["--study", path.stem, "--storage", url, "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "gradient noise scale" in page and "B_simple" in page and "sharpness_and_gap.png" in page
    assert (out / "sharpness_and_gap.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--small-batch", "16", "--big-batch", "24"], "multiple"), (["--train-examples", "8"], "--train-examples")],
)
@pytest.mark.slow
def test_bad_probe_settings_exit_2(study_file: Callable[..., Path], tmp_path: Path, extra: list[str], message: str) -> None:
    result = run_cli("search.probe", "--study", str(study_file()), "--storage", f"sqlite:///{tmp_path / 'x.sqlite3'}", *extra, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and message in result.stderr and "Traceback" not in result.stderr
    if message == "multiple":  # checked before the storage is opened (the run's length needs the study's frontier)
        assert not (tmp_path / "x.sqlite3").exists()


BATCH_NORM_MODEL = {"model": {"name": "airbench", "args": {"widths": [4, 4, 4], "stem_width": 4}}, "dataset": {"image_size": 16}}


@pytest.mark.slow
def test_a_batch_norm_model_is_measured_over_groups_of_the_smallest_batch_size(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path, url = study_file(BATCH_NORM_MODEL), f"sqlite:///{tmp_path / 'bn.sqlite3'}"
    bad = run_cli("search.probe", "--study", str(path), "--storage", url, *PROBE_ARGS[:4], "--small-batch", "8", cwd=REPO)
    assert bad.returncode == 2 and "multiple of the normalization group (16" in " ".join(bad.stderr.split()) and "Traceback" not in bad.stderr
    good = run_cli("search.probe", "--study", str(path), "--storage", url, *PROBE_ARGS, cwd=REPO)
    assert good.returncode == 0, good.stderr
    assert "batch norm over ghost groups of 16 examples" in good.stdout


def _trial(batch_size: int, gap: float, relative: float) -> optuna.trial.FrozenTrial:
    return create_trial(
        params={"batch_size": batch_size, "lr": 0.1, "momentum": 0.9},
        distributions={
            "batch_size": CategoricalDistribution([64, 128, 256, 512]), "lr": FloatDistribution(0.01, 1.0), "momentum": FloatDistribution(0.5, 0.99),
        },
        value=1.0, user_attrs={"frontier_role": "seed", "sharpness": 50.0, "sharpness_lr_relative": relative, "weight_norm": 30.0,
                               "generalization_gap": gap, "effective_lr": 0.1},
    )


def test_diagnostics_compare_relative_sharpness_and_state_the_relation_only_with_enough_trials() -> None:
    sizes = [64, 128, 256, 512]
    related = [_trial(sizes[i % 4], 0.1 + 0.05 * i, 0.2 * (1 + i)) for i in range(MIN_CORRELATION_TRIALS)]
    lines = diagnostics_summary(related)
    assert any(line.startswith("The learning-rate-relative sharpness") and "at batch size 64" in line for line in lines)
    assert any("Raw sharpness is not compared between batch sizes" in line for line in lines)
    relation = next(line for line in lines if line.startswith("Sharpness and the generalization gap over 20 seed re-runs"))
    assert "excludes zero: sharper runs generalize worse" in relation
    few = diagnostics_summary(related[: MIN_CORRELATION_TRIALS - 1])
    assert any("relation is not stated: 19 diagnosed trials" in line for line in few)
    assert not any(line.startswith("Sharpness and the generalization gap over") for line in few)
