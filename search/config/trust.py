"""Where user code may come from: a study file the user runs, never the database.

A study file is code, as a LightningCLI config is: its class paths are imported and called. The
spec stored with a study is data that anyone who can write to the database can edit, so commands
that rebuild a model from it (`search.evaluate`, `search.speed`) run its class paths only when the
user names the study file too and the file names the same code. A stored spec whose only code is
the project's own built-in models resolves them from the project's folder, whatever it says.
"""
from __future__ import annotations

from search.config.load import PROJECT_ROOT
from search.config.spec import BUILTIN_MODELS, CodeSpec, StudySpec
from search.errors import UserError


def user_code(spec: StudySpec) -> dict[str, CodeSpec]:
    """The spec's class paths that are not the project's built-in models: what runs the user's code."""
    found: dict[str, CodeSpec] = {}
    if spec.model.class_path is not None and spec.model.class_path not in BUILTIN_MODELS.values():
        found["model"] = CodeSpec(class_path=spec.model.class_path, init_args=spec.model.init_args)
    if spec.data is not None:
        found["data"] = spec.data
    if isinstance(spec.loss, CodeSpec):
        found["loss"] = spec.loss
    return found


def trusted_spec(stored: StudySpec, study_file: StudySpec | None, study_name: str) -> StudySpec:
    """The stored spec, safe to build a model from: its user code must be the study file's, and resolve from the file's folder."""
    code = user_code(stored)
    if not code:
        return stored.model_copy(update={"code_dir": str(PROJECT_ROOT)})
    named = ", ".join(f"{key}.class_path {value.class_path}" for key, value in code.items())
    if study_file is None:
        raise UserError(
            f"Study '{study_name}' trains your own code ({named}), and code is run only from a study file you name, never "
            "from what the database holds (anyone who can write to it could change it). Pass the study file: "
            f"--study path/to/{study_name}.yaml."
        )
    if user_code(study_file) != code:
        raise UserError(
            f"The study file names different code than the one stored with study '{study_name}' ({named}): either the file "
            "changed since the study ran, or the stored spec was edited. Run the study file the study was created with, "
            "or start a new study from this file (search.run --study-name NEW)."
        )
    return stored.model_copy(update={"code_dir": study_file.code_dir})
