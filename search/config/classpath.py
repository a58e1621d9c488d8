"""The user's own code, found by import path (LightningCLI's `class_path` / `init_args`).

Paths resolve from the working directory and from the study file's folder, in every process
that imports them (the workers re-import from the spec they are handed). Whatever goes wrong
(a missing module, a typo in the name, arguments the class does not take, an exception in its
constructor) becomes a one-paragraph `UserError` naming the path: it happens before the study
exists, so nothing is stored.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from search.config.spec import CodeSpec
from search.errors import UserError


def _search_path(code_dir: str | None) -> None:
    """The study file's folder first, then the working directory: code beside the study file wins."""
    for folder in (os.getcwd(), code_dir):
        if folder:
            if folder in sys.path:
                sys.path.remove(folder)
            sys.path.insert(0, folder)


def import_object(class_path: str, code_dir: str | None, role: str) -> Any:
    """The object named by `module.Name` (or `package.module.Class.attribute`)."""
    _search_path(code_dir)
    parts = class_path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            target: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                continue  # this prefix is not a module: try a shorter one
            raise UserError(
                f"The {role} `{class_path}` could not be imported: module {module_name} needs {error.name}, which is not "
                "installed. Install it in this environment and run again."
            ) from None
        except SystemExit as exited:
            raise exit_error(f"Importing {module_name} (the {role} `{class_path}`)", exited) from None
        except Exception as error:  # noqa: BLE001 - any failure inside the user's module is theirs to fix
            raise UserError(
                f"The {role} `{class_path}`: importing {module_name} raised {type(error).__name__}: {_first_line(error)}. "
                "Fix that module and run again."
            ) from None
        try:
            for attribute in parts[split:]:
                target = getattr(target, attribute)
        except AttributeError:
            raise UserError(
                f"The {role} `{class_path}` names nothing: module {module_name} has no `{'.'.join(parts[split:])}`. "
                "Check the spelling of class_path."
            ) from None
        return target
    raise UserError(
        f"The {role} `{class_path}` could not be imported: no module {parts[0]} in the working directory "
        f"({os.getcwd()}), next to the study file ({code_dir or 'unknown'}) or installed. Run from the project's folder, "
        "put the module next to the study file, or install it (pip install -e your_project)."
    )


def instantiate(code: CodeSpec, code_dir: str | None, role: str) -> Any:
    """Call the class or function at `code.class_path` with its `init_args`."""
    target = import_object(code.class_path, code_dir, role)
    if not callable(target):
        raise UserError(f"The {role} `{code.class_path}` is a {type(target).__name__}, not a class or function. Point class_path at one.")
    arguments = dict(code.init_args)
    try:
        return target(**arguments)
    except TypeError as error:
        if _signature_rejects(target, arguments):
            expected = _parameters(target)
            raise UserError(
                f"The {role} `{code.class_path}` does not accept init_args {sorted(code.init_args)}: {_first_line(error)}. "
                f"It takes: {expected}. Fix init_args in the study file."
            ) from None
        raise _raised(role, code.class_path, error) from None
    except SystemExit as exited:
        raise exit_error(f"The {role} `{code.class_path}`", exited) from None
    except Exception as error:  # noqa: BLE001
        raise _raised(role, code.class_path, error) from None


def exit_error(what: str, exited: SystemExit) -> UserError:
    """User code that called sys.exit: a failure, never the end of the run (an exit code 0 would read as success)."""
    return UserError(
        f"{what} called sys.exit({exited.code!r}). User code may raise an exception to fail, never end the process: "
        "remove the call and run again."
    )


def _raised(role: str, class_path: str, error: BaseException) -> UserError:
    return UserError(
        f"The {role} `{class_path}` raised {type(error).__name__} when built with its init_args: {_first_line(error)}. "
        "Fix init_args or the code and run again."
    )


def _first_line(error: BaseException) -> str:
    """The error's first line, bounded: user values never flood the message."""
    text = str(error).strip().split("\n")[0]
    return text if len(text) <= 300 else text[:300] + "..."


def _signature(target: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _signature_rejects(target: Any, arguments: dict[str, Any]) -> bool:
    signature = _signature(target)
    if signature is None:
        return True
    try:
        signature.bind(**arguments)
    except TypeError:
        return True
    return False


def _parameters(target: Any) -> str:
    signature = _signature(target)
    if signature is None:
        return "(unknown)"
    names = [name for name in signature.parameters if name not in ("self", "args", "kwargs")]
    return ", ".join(names) or "no arguments"

