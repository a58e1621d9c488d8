"""User code comes only from a study file the user runs: a spec edited in the database runs nothing (issue 22, 1)."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from tests.conftest import run_cli

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
'''


@pytest.mark.slow
def test_a_spec_edited_in_the_database_runs_no_code(study_file: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "mynet.py").write_text(NET)
    path = study_file({"model": {"name": None, "args": {}, "class_path": "mynet.Net", "init_args": {"classes": 3}}, "n_trials": 1, "pruner": {"name": "none", "args": {}}})
    url = f"sqlite:///{tmp_path / 'trust.sqlite3'}"
    ran = run_cli("search.run", "--study", str(path), "--storage", url, "--quiet", "--skip-speed-profile", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr

    study = optuna.load_study(study_name=path.stem, storage=url)
    spec = study.user_attrs["spec"]
    marker = tmp_path / "PWNED"
    study.set_user_attr("spec", {**spec, "model": {**spec["model"], "class_path": "os.system", "init_args": {"command": f"touch {marker}"}}})

    # By name only: the stored class path is never imported.
    by_name = run_cli("search.evaluate", "--study", path.stem, "--storage", url, "--top", "1", "--seeds", "1", cwd=tmp_path)
    assert by_name.returncode == 2 and "never from what the database holds" in by_name.stderr and "Traceback" not in by_name.stderr
    assert "--study path/to/" in by_name.stderr
    # With the study file: the stored spec names other code than the file, so it is refused too.
    with_file = run_cli("search.evaluate", "--study", str(path), "--storage", url, "--top", "1", "--seeds", "1", cwd=tmp_path)
    assert with_file.returncode == 2 and "names different code" in with_file.stderr
    speed = run_cli("search.speed", "--study", path.stem, "--storage", url, cwd=tmp_path)
    assert speed.returncode == 2 and "never from what the database holds" in speed.stderr
    assert not marker.exists()
    assert len(optuna.get_all_study_names(optuna.storages.RDBStorage(url))) == 1  # no evaluation study was created

    # The untouched spec with its study file evaluates (the file's code, from the file's folder).
    study.set_user_attr("spec", spec)
    assert json.dumps(study.user_attrs["spec"]) == json.dumps(spec)
    fine = run_cli("search.evaluate", "--study", str(path), "--storage", url, "--top", "1", "--seeds", "1", cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr
