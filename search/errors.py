"""User-facing errors: one paragraph on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import functools
import sys
import textwrap
from typing import Callable, TypeVar

EXIT_USER_ERROR = 2

F = TypeVar("F", bound=Callable[..., int])


class UserError(Exception):
    """A problem the user can fix (bad study file, missing data, unreachable database...).

    The message must say what is wrong and what to do about it.
    """


class TrialFailed(Exception):
    """Ends one trial as FAIL with a stored reason; the study goes on."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def exits_on_user_error(main: F) -> F:
    """Turn `UserError` into a wrapped paragraph on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return main(*args, **kwargs)
        except UserError as error:
            paragraph = " ".join(str(error).split())
            print("error: " + textwrap.fill(paragraph, width=100, subsequent_indent="  "), file=sys.stderr)
            return EXIT_USER_ERROR

    return wrapper  # type: ignore[return-value]
