"""Starting a study's worker processes: one per GPU, each pinned to its GPU, or several sharing the CPU."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch

from search.config.spec import StudySpec
from search.errors import UserError
from search.store.urls import STORAGE_ENV
from search.study.worker import SPEC_ENV


def worker_count(requested: str) -> int:
    if requested == "auto":
        return max(1, torch.cuda.device_count())
    if not (requested.isascii() and requested.isdigit()) or not 1 <= int(requested) <= 1024:
        raise UserError(f"--workers must be 'auto' or a number from 1 to 1024, not '{requested[:20]}'.")
    return int(requested)


def describe_workers(count: int) -> str:
    if torch.cuda.is_available():
        return f"{count} x GPU"
    return f"{count} x CPU ({max(1, len(os.sched_getaffinity(0)) // count)} threads each)"


def spawn_workers(spec: StudySpec, url: str, workers: int, quiet: bool, speed_profile: bool) -> int:
    """One subprocess per worker, each pinned to one GPU (or sharing the CPU's cores)."""
    gpus = torch.cuda.device_count()
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    processes = []
    for index in range(workers):
        env = {**os.environ, STORAGE_ENV: url, SPEC_ENV: spec.model_dump_json(), "SEARCH_THREADS": str(threads)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        command = [sys.executable, "-m", "search.worker", str(index)] + (["--quiet"] if quiet else [])
        command += [] if speed_profile else ["--skip-speed-profile"]
        # A session of its own: Ctrl-C reaches the workers once, forwarded from here.
        processes.append(subprocess.Popen(command, env=env, start_new_session=True))

    def forward(number: int, frame: object) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(number)

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, forward)
    codes = [process.wait() for process in processes]
    for index, code in enumerate(codes):
        if code < 0:
            print(f"worker {index} was killed by {signal.Signals(-code).name}; its trial is retried by the others "
                  f"(or by the next run) once its heartbeat is missed.", file=sys.stderr)
    # The shell's convention for a death by signal N is 128 + N.
    return next((128 - code if code < 0 else code for code in codes if code), 0)
