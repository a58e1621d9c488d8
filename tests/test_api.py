"""The Python API (`search.Study`) and the package's layering: imports only go down."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from search import Study
from search.errors import UserError
from tests.conftest import REPO

# Bottom to top: a module may import from its own layer or any layer below it.
LAYERS = (
    "search.errors", "search.stats", "search.record", "search.config", "search.data", "search.train", "search.measure",
    "search.store", "search.study", "search.analysis", "search.render", "search.api", "search",
)


def _layer(module: str) -> int:
    return max(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("search.")}


def test_imports_only_go_down_the_layers() -> None:
    package = REPO / "search"
    upward = []
    for path in package.rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        upward += [f"{module} -> {name}" for name in _imports(path) if _layer(name) > _layer(module)]
    assert not upward, upward


def test_reading_results_never_loads_torch() -> None:
    """The report, best and the views read a study without torch or Lightning (fast, and fine on a laptop without them)."""
    code = "import sys, search, search.report, search.best; heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')); print(heavy[:3]); sys.exit(bool(heavy))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_study_runs_and_reports_its_best_trials(study_file: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = study_file({"pruner": {"name": "none", "args": {}}, "diagnostics": {"enabled": False}})
    study = Study.from_file(path, storage=f"sqlite:///{tmp_path / 'api.sqlite3'}", overrides={"budget_examples": 512})
    assert study.run(n_trials=2, quiet=True, speed_profile=False) == 0
    assert study.run(n_trials=3, quiet=True, speed_profile=False) == 0  # resumes: one more trial
    stored = study.optuna_study()
    assert len(stored.trials) == 3 and stored.user_attrs["spec"]["budget_examples"] == 512
    best = study.best(top=2)
    assert len(best) == 2 and best[0].record.final_val_loss <= best[1].record.final_val_loss
    assert all(row.record.examples_seen == row.record.steps * row.batch_size for row in best)
    # A stored study opened by name reads the same, and every command's method is there.
    opened = Study.open(path.stem, storage=f"sqlite:///{tmp_path / 'api.sqlite3'}")
    assert [row.number for row in opened.best(top=2)] == [row.number for row in best]
    assert opened.spec.budget_examples == 512 and "3 trials" in opened.describe()
    report = opened.analyze()
    assert report.strategy == "joint" and sum(report.trials.values()) == 3 and report.summary
    assert all(callable(getattr(Study, name)) for name in ("run", "best", "frontier", "report", "evaluate", "probe", "speed"))
    assert "study" in capsys.readouterr().out


def test_study_errors_are_user_errors(study_file: Callable[..., Path], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never.sqlite3'}"
    with pytest.raises(UserError, match="min_steps"):
        Study.from_file(study_file(), storage=url, overrides={"budget_examples": 16})
    with pytest.raises(UserError, match="SQLite storage supports one worker"):
        Study.from_file(study_file(), storage=url).run(workers=2)
    assert not (tmp_path / "never.sqlite3").exists()
