"""`python -m search.worker INDEX`: one worker process that `search.run` starts (not for direct use).

It reads the study spec and storage URL from the environment (never from the command line, where
other users could read a password) and runs trials with the console's progress lines.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from search.config.spec import StudySpec
from search.errors import exits_on_user_error
from search.render.console import Progress
from search.store.urls import STORAGE_ENV
from search.study.shutdown import STOP
from search.study.worker import SPEC_ENV, run_worker


@exits_on_user_error
def main() -> int:
    spec = StudySpec.model_validate(json.loads(os.environ[SPEC_ENV]))
    STOP.install()
    threads = os.environ.get("SEARCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    progress = Progress(spec, quiet="--quiet" in sys.argv)
    return run_worker(
        spec, os.environ[STORAGE_ENV], worker_index=int(sys.argv[1]), speed_profile="--skip-speed-profile" not in sys.argv,
        progress=progress,
    )


if __name__ == "__main__":
    sys.exit(main())
