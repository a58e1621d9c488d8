"""Benchmarks: each module runs by one command (`python -m bench.NAME`) and measures side by side in one run."""
from __future__ import annotations

from pathlib import Path


def publish(out: Path, text: str) -> int:
    """Write a benchmark's markdown block to `out` (bench/results/NAME.md by default) and print it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0
