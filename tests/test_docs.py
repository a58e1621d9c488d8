"""docs/reference.md: generated from the spec models, complete, and checked for staleness."""
from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from search.config.spec import StudySpec
from search.docs import REFERENCE, render

REPO = Path(__file__).resolve().parents[1]


def run_docs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "search.docs", *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=120)


def models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in models_in(arg)] if get_origin(annotation) in (Union, types.UnionType) else []


def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a study file, nested sections' keys included (walked independently of search.docs)."""
    found = []
    for name, field in model.model_fields.items():
        found.append(prefix + name)
        for sub in models_in(field.annotation):
            found += keys(sub, f"{prefix}{name}.")
    return found


def test_committed_reference_is_current() -> None:
    result = run_docs("--check")
    assert result.returncode == 0, result.stderr


def test_every_key_is_documented() -> None:
    text = render()
    all_keys = keys(StudySpec)
    assert {"dataset.name", "search_space.batch_size.min", "search_space.momentum.log", "loss.class_path", "checkpoints.k"} <= set(all_keys)
    missing = [key for key in all_keys if f"\n| `{key}` | " not in text]
    assert not missing
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(all_keys)  # each key once, and nothing else
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row)[1:-1]  # `\|` is a pipe within a cell
        assert len(cells) == 4 and all(cell.strip() for cell in cells), row  # a type, default and meaning for each key


def test_check_fails_when_stale(tmp_path: Path) -> None:
    out = tmp_path / "reference.md"
    assert run_docs("--out", str(out)).returncode == 0
    assert out.read_text(encoding="utf-8") == REFERENCE.read_text(encoding="utf-8")
    assert run_docs("--check", "--out", str(out)).returncode == 0
    stale = out.read_text(encoding="utf-8").replace("| `budget_examples` |", "| `budget_example` |")
    assert stale != REFERENCE.read_text(encoding="utf-8")
    out.write_text(stale, encoding="utf-8")
    result = run_docs("--check", "--out", str(out))
    assert result.returncode == 1
    assert "python -m search.docs" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    missing = run_docs("--check", "--out", str(tmp_path / "absent.md"))
    assert missing.returncode == 1
