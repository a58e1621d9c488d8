"""Graceful stop on SIGINT/SIGTERM (Ctrl-C, a scheduler's preemption).

The first signal asks the running trial to stop after its current batch; the trial is then
stored as FAIL with the reason `interrupted (SIGTERM)` and its parameters are queued again,
so running the same command resumes the study. A second signal stops at once.
"""
from __future__ import annotations

import signal
from types import FrameType


class StopRequest:
    def __init__(self) -> None:
        self.signal_number: int | None = None

    def install(self) -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._handle)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.signal_number = number
        for other in (signal.SIGINT, signal.SIGTERM):
            signal.signal(other, signal.SIG_DFL if other == signal.SIGTERM else signal.default_int_handler)

    def __bool__(self) -> bool:
        return self.signal_number is not None

    @property
    def reason(self) -> str:
        return f"interrupted ({signal.Signals(self.signal_number).name})" if self.signal_number else ""

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + (self.signal_number or 0)


STOP = StopRequest()
