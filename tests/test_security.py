"""Credentials: never printed, and they can stay out of the URL (environment or a file)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import optuna
import pytest

from tests.conftest import PASSWORD_ROLE, run_cli

pytestmark = pytest.mark.postgres
USER, PASSWORD = PASSWORD_ROLE
HOST = "127.0.0.1:5432"


@pytest.mark.slow
def test_a_password_in_the_url_is_never_printed(study_file: Callable[..., Path], tmp_path: Path, password_role: None) -> None:
    url = f"postgresql+psycopg2://{USER}:{PASSWORD}@{HOST}/{USER}"
    path = study_file({"n_trials": 1})
    result = run_cli("search.run", "--study", str(path), "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert f"optuna-dashboard postgresql+psycopg2://{USER}:***@{HOST}/{USER}" in result.stdout
    optuna.delete_study(study_name=path.stem, storage=url)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["PGPASSWORD", "PGPASSFILE"])
def test_credentials_from_the_environment_or_a_file(source: str, study_file: Callable[..., Path], tmp_path: Path, password_role: None) -> None:
    url = f"postgresql+psycopg2://{USER}@{HOST}/{USER}"
    if source == "PGPASSWORD":
        env = {"PGPASSWORD": PASSWORD}
    else:
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"127.0.0.1:5432:{USER}:{USER}:{PASSWORD}\n")
        passfile.chmod(0o600)
        env = {"PGPASSFILE": str(passfile)}
    path = study_file({"n_trials": 1})
    result = run_cli("search.run", "--study", str(path), cwd=tmp_path, env={"SEARCH_STORAGE": url, **env})
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    os.environ.update(env)
    try:
        assert len(optuna.load_study(study_name=path.stem, storage=url).trials) == 1
        optuna.delete_study(study_name=path.stem, storage=url)
    finally:
        for key in env:
            os.environ.pop(key)
