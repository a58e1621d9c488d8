"""An airbench-style fast net (after Keller Jordan's airbench94): a conv stem, three
conv-pool-BN-GELU groups and a scaled linear head. Pooling adapts to any input size."""
from __future__ import annotations

import torch
from torch import nn


class _ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.BatchNorm2d(c_out, momentum=0.4),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out, momentum=0.4),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class AirbenchNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (64, 256, 256),
        stem_width: int = 24,
        head_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"airbench needs three group widths, got {list(widths)}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, 2, padding=0, bias=True), nn.GELU())
        self.groups = nn.Sequential(
            _ConvGroup(stem_width, widths[0]), _ConvGroup(widths[0], widths[1]), _ConvGroup(widths[1], widths[2])
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        # Scaling the logits down lets the head train at the same learning rate as the body.
        self.head_scale = head_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.groups(self.stem(x))).flatten(1)
        return self.head(x) * self.head_scale
