"""Reading a study file: find it, parse it safely, apply command-line overrides, validate it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from search.config.spec import StudySpec
from search.errors import UserError

STUDIES_DIR = Path(__file__).resolve().parents[1] / "studies"


def find_study_file(study: str) -> Path:
    """`--study` is a file path or the name of a file in `studies/`."""
    candidates = [Path(study), Path("studies") / f"{study}.yaml", STUDIES_DIR / f"{study}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))
    raise UserError(
        f"No study file for '{study}'. Pass a path to a YAML study file or one of the shipped "
        f"studies: {', '.join(known) or '(none found)'}."
    )


def load_spec(study: str, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Read a study file, apply command-line overrides (dotted keys) and validate."""
    path = find_study_file(study)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"Study file {path} is not valid YAML: {error}. Fix the syntax and run again.") from None
    if not isinstance(raw, dict):
        raise UserError(f"Study file {path} must hold a mapping of settings (dataset, model, budget_examples, ...).")
    raw.setdefault("name", path.stem)
    raw.setdefault("code_dir", str(path.resolve().parent))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if dotted.startswith("dataset.") and "data" in raw:
            raise UserError(
                f"Study file {path} brings its own data (`data: class_path`), so --data (a built-in data set's location) "
                "does not apply: pass the location through data.init_args instead."
            )
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UserError(f"Study file {path}: `{key}` must be a mapping to override `{dotted}`.")
        node[leaf] = value
    return validate_spec(raw, source=str(path))


def validate_spec(raw: dict[str, Any], source: str = "study") -> StudySpec:
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'study'}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        )
        raise UserError(f"Study file {source} is invalid: {problems}. Fix these fields and run again.") from None
