"""Fixed-budget search of batch size, learning rate and momentum.

The flow goes down the layers, one sub-package per stage: `config` (the study file) ->
`data` -> `train` (the one training step, the trial's Lightning module) -> `measure` (speed,
noise scale, sharpness) -> `store` (databases, views) -> `study` (sampler, pruners, one trial,
workers) -> `analysis` -> `render` (console, figures, HTML) -> `api` (`Study`) -> the commands
(`python -m search.run`, `search.best`, `search.report`, ...).

`from search import Study` is the Python API; it is imported on first use, so that `import
search.report` (and the rest of the torch-free reading side) never loads torch.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Study"]


def __getattr__(name: str) -> Any:
    if name == "Study":
        from search.api import Study

        return Study
    raise AttributeError(f"module 'search' has no attribute {name!r}")
