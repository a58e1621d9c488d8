"""Write docs/reference.md, every study-file key, from the spec models in search/config/spec.py, and
docs/summary.schema.json, the JSON Schema of `summary.json`, from `search.analysis.study_report.StudyReport`.

A hand-written reference drifts from the code. This one is generated: keys, types and defaults
from the pydantic models, meanings from the `#` comments above each field, section intros from
the class docstrings. `--check` (run by tests/test_docs.py) fails while either file is stale.
"""
from __future__ import annotations

import ast
import inspect
import io
import json
import re
import sys
import tokenize
import types
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from search.analysis.study_report import StudyReport
from search.cli import command_parser
from search.config import spec
from search.config.spec import StudySpec

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"
SCHEMA = REFERENCE.with_name("summary.schema.json")

# Keys a study file may hold but that are filled in for the user: listed (a stored spec has them)
# and marked, rather than skipped.
INTERNAL: dict[str, str] = {}
# Required by the model, but search.config.load fills it in from the file's path when the file leaves it out.
LOADER_DEFAULTS = {"name": "the file's name, less `.yaml`"}

# Regular expressions said in words; any other pattern is shown as it is.
PATTERNS = {
    spec.STUDY_NAME: "letters, digits, `_`, `.` and `-`, starting with a letter, digit or `_`",
    next(m.pattern for m in get_args(spec.ClassPath)[1].metadata if hasattr(m, "pattern")): "a dotted import path, `module.Name`",
}
BOUNDS = {at.Ge: ("≥", "ge"), at.Gt: (">", "gt"), at.Le: ("≤", "le"), at.Lt: ("<", "lt")}


@cache
def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """Each field declared in `model` itself, with its comment: the contiguous `#` lines right above it and a trailing one."""
    source = inspect.getsource(model)
    comments = {
        token.start[0]: (token.string.lstrip("#").strip(), token.line.lstrip().startswith("#"))
        for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT
    }
    found: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above: list[str] = []
            line = node.lineno - 1
            while line in comments and comments[line][1]:
                above.insert(0, comments[line][0])
                line -= 1
            trailing = comments.get(node.end_lineno or node.lineno, ("", True))
            found[node.target.id] = " ".join(above + ([] if trailing[1] else [trailing[0]]))
    return found


def comment(model: type[BaseModel], name: str) -> str:
    """The comment of a field where it is declared (a subclass may inherit it)."""
    for klass in model.__mro__:
        if issubclass(klass, BaseModel) and klass is not BaseModel and name in field_comments(klass):
            return field_comments(klass)[name]
    return ""


def nested(annotation: Any) -> list[type[BaseModel]]:
    """The spec models a field's value may be (alone or as one member of a union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, types.UnionType, Annotated):
        return [model for arg in get_args(annotation) for model in nested(arg)]
    return []


def sections(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """(dotted prefix, model) for the study file and every nested section, in declaration order."""
    yield prefix, model
    for name, field in model.model_fields.items():
        for sub in nested(field.annotation):
            yield from sections(sub, f"{prefix}{name}.")


def type_text(annotation: Any, key: str, constraints: tuple[Any, ...] = ()) -> str:
    """A type as a reader writes it: `int ≥ 1`, `"sgd" | "adamw"`, `list[int]`, `str or null`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        extra = [m for arg in args[1:] for m in (arg.metadata if isinstance(arg, FieldInfo) else [arg])]
        return type_text(args[0], key, (*constraints, *extra))
    if origin in (Union, types.UnionType):
        members = [type_text(arg, key) for arg in args if arg is not type(None)]
        return " or ".join(members + (["null"] if type(None) in args else []))
    if origin is Literal:
        return " | ".join(json.dumps(value) for value in args)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"mapping ([`{key}.*`](#{key.replace('.', '')}))"  # GitHub's heading ids drop the dots
    if origin is dict:
        return "mapping"
    name = f"list[{type_text(args[0], key)}]" if origin is list else getattr(annotation, "__name__", str(annotation))
    bounds = [(symbol, getattr(c, attribute)) for c in constraints for kind, (symbol, attribute) in BOUNDS.items() if isinstance(c, kind)]
    bounds.sort(key=lambda bound: bound[0] not in "≥>")  # the lower bound first
    if len(bounds) == 2 and bounds[0][0] in "≥>":
        (low_symbol, low), (high_symbol, high) = bounds
        name = f"{low:,} {'≤' if low_symbol == '≥' else '<'} {name} {high_symbol} {high:,}"
    else:
        name = " ".join([name, *(f"{symbol} {value:,}" for symbol, value in bounds)])
    notes = [PATTERNS.get(c.pattern, f"matching `{c.pattern}`") for c in constraints if getattr(c, "pattern", None)]
    notes += [f"at most {c.max_length:,} characters" for c in constraints if isinstance(c, at.MaxLen)]
    notes += ["non-empty" if c.min_length == 1 else f"at least {c.min_length} items" for c in constraints if isinstance(c, at.MinLen)]
    return f"{name} ({'; '.join(notes)})" if notes else name


def default_text(key: str, field: FieldInfo) -> str:
    if key in LOADER_DEFAULTS:
        return LOADER_DEFAULTS[key]
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return "its keys' defaults" if isinstance(value, BaseModel) else f"`{json.dumps(value)}`"


def intro(model: type[BaseModel]) -> str:
    """The class docstring (not an inherited one), as written."""
    doc = vars(model).get("__doc__")
    return inspect.cleandoc(doc) if doc else ""


def escape(text: str) -> str:
    """`<` outside code spans as `&lt;`, so that `results/<study>` is not taken for an HTML tag."""
    parts = text.split("`")
    return "`".join(part if i % 2 else re.sub(r"<(?=[A-Za-z/!?])", "&lt;", part) for i, part in enumerate(parts))


def cell(text: str) -> str:
    """Table-safe text: `|` escaped too (GitHub reads `\\|` as `|` even in code spans)."""
    return escape(text).replace("|", "\\|")


def render() -> str:
    lines = [
        "# Study-file reference",
        "",
        "Generated by `python -m search.docs` from [search/config/spec.py](../search/config/spec.py): do not edit by hand.",
        "",
        "A study file is YAML: a mapping whose keys are listed below, nested sections as nested mappings",
        "(`optimizer.name` is `name:` under `optimizer:`). Examples are in [usage.md](usage.md#study-files).",
    ]
    for prefix, model in sections(StudySpec):
        lines += ["", f"## `{prefix.rstrip('.')}`" if prefix else "## Top level", ""]
        lines += [escape(intro(model)), ""] if intro(model) else []
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            key = prefix + name
            meaning = comment(model, name)
            if nested(field.annotation) and not meaning:  # a section: the first paragraph of its intro
                meaning = " ".join(intro(nested(field.annotation)[0]).split("\n\n")[0].split()) or f"The `{key}` section."
            if key in INTERNAL:
                meaning = f"*Internal*: {INTERNAL[key]}. {meaning}"
            lines.append(f"| `{key}` | {cell(type_text(field.annotation, key, tuple(field.metadata)))} | {cell(default_text(key, field))} | {cell(meaning)} |")
    return "\n".join(lines) + "\n"


def schema() -> str:
    """The JSON Schema of summary.json (what `search.report` writes)."""
    return json.dumps(StudyReport.json_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("docs", __doc__, "--check", "--out /tmp/reference.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file differs from what would be generated")
    parser.add_argument("--out", type=Path, default=REFERENCE, help="the reference to write or check (default: docs/reference.md)")
    parser.add_argument("--schema-out", type=Path, default=SCHEMA, help="the schema to write or check (default: docs/summary.schema.json)")
    args = parser.parse_args(argv)
    files = [(args.out, render(), REFERENCE, "--out"), (args.schema_out, schema(), SCHEMA, "--schema-out")]
    if args.check:
        stale = [(path, default, option) for path, text, default, option in files if not path.is_file() or path.read_text(encoding="utf-8") != text]
        for path, default, option in stale:
            again = "" if path.resolve() == default else f" {option} {path}"
            print(f"{path} is stale: run `python -m search.docs{again}`.", file=sys.stderr)
        return 1 if stale else 0
    for path, text, _, _ in files:
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
