"""Every stored attribute and sampled parameter is named once, in `search.record` (and read or written through
its records everywhere else); Optuna's private attributes are touched only in `search.store.optuna_internals`."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

KEYED = {"user_attrs", "params", "system_attrs"}
PRIVATE = {"_storage", "_thread_local", "_trial_id"}


def _sources(allowed: set[str]) -> list[Path]:
    paths = [*(REPO / "search").rglob("*.py"), *(REPO / "bench").rglob("*.py")]
    return [p for p in paths if str(p.relative_to(REPO)) not in allowed and "search/store/" not in str(p.relative_to(REPO))]


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def keyed_by_text(tree: ast.AST) -> list[int]:
    """Lines that read or write a trial's or study's attribute, or a sampled parameter, by a literal name."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr in KEYED and _is_text(node.slice):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args and _is_text(node.args[0]):
            target = node.func.value
            if node.func.attr == "set_user_attr" or (node.func.attr == "get" and isinstance(target, ast.Attribute) and target.attr in KEYED):
                lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and _is_text(node.left) and isinstance(node.comparators[0], ast.Attribute) and node.comparators[0].attr in KEYED:
            lines.append(node.lineno)
    return lines


def test_no_attribute_key_strings_outside_record_and_store() -> None:
    found = [f"{p.relative_to(REPO)}:{line}" for p in _sources({"search/record.py"}) for line in keyed_by_text(ast.parse(p.read_text()))]
    assert not found, found


def test_the_check_finds_what_it_forbids() -> None:
    code = 'a = t.user_attrs["x"]\nb = t.params.get("lr")\nstudy.set_user_attr("k", 1)\nc = "lr" in t.params\nd = t.user_attrs\n'
    assert keyed_by_text(ast.parse(code)) == [1, 2, 3, 4]


def test_optuna_private_attributes_only_in_their_adapter() -> None:
    found = [
        f"{p.relative_to(REPO)}:{node.lineno}"
        for p in _sources(set()) for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE
    ]
    assert not found, found
