"""The device a worker trains on."""
from __future__ import annotations

import torch


def worker_device() -> tuple[torch.device, str]:
    """The GPU this process was pinned to (CUDA_VISIBLE_DEVICES), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", 0), torch.cuda.get_device_name(0)
    return torch.device("cpu"), f"cpu ({torch.get_num_threads()} threads)"
