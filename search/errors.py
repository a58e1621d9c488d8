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


class Interrupted(UserError):
    """Ctrl-C or SIGTERM before any trial ran (while decoding data, say): nothing was stored.
    Exits with the shell's code for the signal (130, 143), not 2."""

    def __init__(self, signal_number: int, what: str) -> None:
        name = {2: "SIGINT", 15: "SIGTERM"}.get(signal_number, f"signal {signal_number}")
        super().__init__(f"Stopped by {name} while {what}; nothing was stored. Run the same command again to start over.")
        self.exit_code = 128 + signal_number


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
            return getattr(error, "exit_code", EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]
