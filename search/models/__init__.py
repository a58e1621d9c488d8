"""Model zoo: a registry of image classifiers built for any input size and class count."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from search.models.airbench import AirbenchNet
from search.models.resnet import CifarResNet
from search.models.tiny import TinyCNN

ModelFactory = Callable[..., nn.Module]

REGISTRY: dict[str, ModelFactory] = {
    "airbench": AirbenchNet,
    "resnet": CifarResNet,
    "tiny_cnn": TinyCNN,
}


def build_model(name: str, num_classes: int, in_channels: int = 3, **args: Any) -> nn.Module:
    """Instantiate a registered model; unknown names and arguments raise KeyError/TypeError."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model '{name}'; known models: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **args)
