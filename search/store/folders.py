"""Folders a run will write into, checked before anything is stored: a refused run leaves nothing behind."""
from __future__ import annotations

import os
from pathlib import Path

from search.errors import UserError


def check_writable_folder(path: Path, what: str, fix: str) -> None:
    """Refuse a folder that could not be created or written (a file in its path, a read-only parent), creating nothing."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"The {what} {path} lies under {existing}, which is a file, not a folder. {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"The {what} {path} cannot be written: {existing} is not writable by this user. {fix}")
