"""The class-stratified, seeded validation split carved from the training set."""
from __future__ import annotations

import torch

from search.errors import UserError


def stratified_split(labels: torch.Tensor, val_size: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of (train, validation), the same fraction of every class held out.

    Image folders list files class by class, so a head/tail split would hold out whole classes.
    """
    n = len(labels)
    n_val = int(val_size) if val_size >= 1 else round(val_size * n)
    if not 0 < n_val < n:
        raise UserError(
            f"dataset.val_size={val_size} leaves no training or no validation images out of {n}; "
            f"use a count below {n} or a fraction such as 0.1."
        )
    generator = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    classes = torch.unique(labels)
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        take = round(n_val * len(members) / n)
        if not 0 < take < len(members):
            raise UserError(
                f"dataset.val_size={val_size} holds out {take} of the {len(members)} images of class {int(c)}: every class needs "
                f"validation and training images. Use a val_size of at least {-(-n // min(int((labels == k).sum()) for k in classes))} "
                f"images (or a larger fraction), or more images per class."
            )
        val_parts.append(members[:take])
        train_parts.append(members[take:])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values
