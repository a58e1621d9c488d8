"""How numbers read in the summary's sentences."""
from __future__ import annotations


def sizes_text(sizes: list[int]) -> str:
    """"16, 64, 1,024"."""
    return ", ".join(f"{b:,}" for b in sizes)


def percent_text(fraction: float) -> str:
    """A signed change: one decimal below 10% ("+2.5%"), none above ("+15%")."""
    return f"{fraction:+.1%}" if abs(fraction) < 0.1 else f"{fraction:+.0%}"
