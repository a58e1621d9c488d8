"""What every benchmark writes: a markdown block with the command, the machine and the date."""
from __future__ import annotations

import datetime
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch


def machine() -> str:
    """The hardware and software the figures belong to."""
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {device}; Python {platform.python_version()}, torch {torch.__version__}"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in self.rows])


def targets_line(targets: list[tuple[str, bool]]) -> str:
    return "Targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in targets) + "."


def write_result(path: Path, title: str, body: list[str]) -> None:
    """Print the block and save it, ready to paste into BENCHMARKS.md."""
    command = " ".join(["python -m", _module(), *sys.argv[1:]])
    header = [f"## {title}", "", f"Command: `{command}`  ", f"Machine: {machine()}  ", f"Date: {datetime.date.today().isoformat()}", ""]
    text = "\n".join(header + body) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text, flush=True)


def _module() -> str:
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return spec.name if spec else Path(sys.argv[0]).stem
