"""Storage URLs: which one a run uses, which back end it names, and how to print it without secrets."""
from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import make_url

from search.errors import UserError

STORAGE_ENV = "SEARCH_STORAGE"


def resolve_url(cli_storage: str | None, study_name: str, file_storage: str | None = None) -> str:
    url = cli_storage or os.environ.get(STORAGE_ENV) or file_storage
    if url:
        return url
    return f"sqlite:///{(RESULTS_DIR / f'{study_name}.sqlite3').resolve()}"


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<malformed storage URL>"


def backend(url: str) -> str:
    try:
        name = make_url(url).get_backend_name()
    except sqlalchemy.exc.ArgumentError:
        raise UserError(
            f"Storage URL {redact(url)} is malformed. Use sqlite:///path/to/file.sqlite3 or "
            "postgresql+psycopg2://user@host:5432/database (password in PGPASSWORD or ~/.pgpass)."
        ) from None
    if name not in ("sqlite", "postgresql"):
        raise UserError(f"Storage back end '{name}' is not supported. Use sqlite:///FILE or postgresql+psycopg2://user@host/db.")
    return name


RESULTS_DIR = Path("results")
