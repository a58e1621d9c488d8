"""Numbers as text for people: one rule for what is not there."""
from __future__ import annotations

from typing import Any, Callable

from search.record import is_finite

ABSENT = "–"


def number_text(value: Any, fmt: str | Callable[[Any], str], absent: str = ABSENT) -> str:
    """`value` formatted (a format spec or a function), or `absent` when it is None, NaN or infinite.

    An accuracy of a regression study, a speed of a trial that never trained: shown as absent.
    """
    if value is None or (isinstance(value, float) and not is_finite(value)):
        return absent
    return fmt(value) if callable(fmt) else format(value, fmt)
