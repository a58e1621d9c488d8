"""Reading a study file: find it, parse it safely, apply command-line overrides, validate it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from search.config.spec import StudySpec
from search.errors import UserError

# The project's folder: the built-in studies (studies/) and the built-in models (models/) they name.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
STUDIES_DIR = PROJECT_ROOT / "studies"


def find_study_file(study: str) -> Path:
    """`--study` is a file path or the name of a file in `studies/`."""
    candidates = [Path(study), Path("studies") / f"{study}.yaml", STUDIES_DIR / f"{study}.yaml"]
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # a name too long for the file system, say: not a file
            continue
    known = sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))
    raise UserError(
        f"No study file for '{study[:120]}'. Pass a path to a YAML study file or one of the shipped "
        f"studies: {', '.join(known) or '(none found)'}."
    )


# A study file is a page of settings: these bounds stop hostile files (huge, deeply nested, or
# an alias bomb that expands a kilobyte into gigabytes) before they cost memory or time.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32


class _Refused(Exception):
    pass


class _StudyLoader(yaml.SafeLoader):
    """yaml.safe_load without aliases (`*name`) and with bounded nesting."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise _Refused("it uses a YAML alias (*name); write the values out instead")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"it nests deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A key given twice is refused: YAML would keep the last silently, and the user meant one of them."""
        seen: set[str] = set()
        for key_node, _ in node.value:
            key = repr(self.construct_object(key_node, deep=True))
            if key in seen:
                line = key_node.start_mark.line + 1
                raise _Refused(f"the key {key} is given twice in one mapping (line {line}); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_study_file(path: Path) -> Any:
    """The parsed YAML of a study file, or a UserError saying why it cannot be read."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _Refused(f"it is larger than {MAX_FILE_BYTES // 1024} KiB")
        text = path.read_bytes().decode("utf-8")
        loader = _StudyLoader(text)  # a SafeLoader: plain data only, never objects
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as reason:
        raise UserError(f"Study file {path} is refused: {reason}. A study file is a short YAML mapping of settings.") from None
    except UnicodeDecodeError:
        raise UserError(f"Study file {path} is not UTF-8 text. Save it as UTF-8 and run again.") from None
    except OSError as error:
        raise UserError(f"Study file {path} cannot be read: {error.strerror}. Check the path and its permissions.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = f"{getattr(error, 'problem', None) or 'unreadable'}{where}"[:200]
        raise UserError(f"Study file {path} is not valid YAML: {problem}. Fix the syntax and run again.") from None


def load_spec(study: str, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Read a study file, apply command-line overrides (dotted keys) and validate."""
    path = find_study_file(study)
    raw = read_study_file(path)
    if not isinstance(raw, dict):
        raise UserError(f"Study file {path} must hold a mapping of settings (dataset, model, budget_examples, ...).")
    raw.setdefault("name", path.stem)
    # Class paths resolve from the study file's folder, or from `code_dir` taken relative to it.
    raw["code_dir"] = str((path.resolve().parent / str(raw.get("code_dir") or ".")).resolve())
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
        raise UserError(f"Study file {source} is invalid: {'; '.join(spec_problems(error))}. Fix these fields and run again.") from None


# Pydantic's words for "this branch of a union has another type": noise when another branch says what is wrong.
_WRONG_BRANCH = ("Input should be a valid dictionary", "Input should be a valid list", "Input should be a valid string")


def spec_problems(error: ValidationError) -> list[str]:
    """Each problem as `key: rule`, in the study file's words: pydantic's names for union branches
    (`function-after[...]`, `list[constrained-int]`) dropped, and a branch that only has the wrong type left out
    when another branch of the same key says what is wrong."""
    by_key: dict[str, list[str]] = {}
    for e in error.errors():
        key = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and ("[" in p or "(" in p))) or "study"
        by_key.setdefault(key, []).append(e["msg"].removeprefix("Value error, "))
    problems = []
    for key, messages in by_key.items():
        real = [m for m in messages if not m.startswith(_WRONG_BRANCH)]
        if not real and any(other.startswith(key + ".") for other in by_key):
            continue  # e.g. a list given for a mapping-or-list key: its item's problem says it
        if real:
            problems += [f"{key}: {m}" for m in dict.fromkeys(real)]
        elif len(messages) > 1:
            problems.append(f"{key}: none of its accepted forms (e.g. a mapping, or a list) fits the value given; see docs/reference.md")
        else:
            problems.append(f"{key}: {messages[0]}")
    return problems
