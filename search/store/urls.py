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


# Query parameters that carry credentials (libpq's and common drivers' names).
SECRET_PARAMETERS = {"password", "pass", "passwd", "pwd", "sslpassword", "secret", "token", "access_token", "api_key", "apikey", "key"}


def redact(url: str) -> str:
    """The URL with its password and credential-bearing query parameters replaced by ***.

    Parsed by hand, not by SQLAlchemy: an unencoded `@` or `/` inside a password must not
    leak part of it, so the credentials end at the LAST `@` before the query string.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "<malformed storage URL>"
    location, question, query = rest.partition("?")
    userinfo, at, address = location.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        location = f"{user}{':***' if colon else ''}@{address}"
    if question:
        pairs = [pair.partition("=") for pair in query.split("&")]
        query = "&".join(f"{k}{eq}{'***' if k.lower() in SECRET_PARAMETERS and v else v}" for k, eq, v in pairs)
    return f"{scheme}://{location}{question}{query}"


def scrub(message: str, url: str) -> str:
    """A driver's message with every piece of the URL's password (split at `@` and `:`) replaced by ***:
    a driver that misparses a URL may print part of it back."""
    location = url.partition("://")[2].partition("?")[0]
    userinfo = location.rpartition("@")[0]
    password = userinfo.partition(":")[2]
    pieces = {password, *password.replace("@", ":").split(":")} - {""}
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= 3:
            message = message.replace(piece, "***")
    return message


def backend(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if scheme.startswith("postgresql") and rest.partition("?")[0].count("@") > 1:
        raise UserError(
            f"Storage URL {redact(url)} has more than one '@' before the host: a password (or user name) holding '@' must be "
            "percent-encoded, '@' as %40 (and ':' as %3A, '/' as %2F), or the driver reads part of it as the host. Better, keep "
            "the password out of the URL: PGPASSWORD or ~/.pgpass."
        )
    try:
        parsed = make_url(url)
        name = parsed.get_backend_name()
        parsed.port  # noqa: B018 - a port that is not a number raises here, not deep in a driver
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise UserError(
            f"Storage URL {redact(url)} is malformed. Use sqlite:///path/to/file.sqlite3 or "
            "postgresql+psycopg2://user@host:5432/database (password in PGPASSWORD or ~/.pgpass)."
        ) from None
    if name not in ("sqlite", "postgresql"):
        raise UserError(f"Storage back end '{name}' is not supported. Use sqlite:///FILE or postgresql+psycopg2://user@host/db.")
    if name == "sqlite" and (not parsed.database or parsed.database == ":memory:"):
        raise UserError(
            f"Storage URL {redact(url)} is an in-memory SQLite database: the study would vanish when the run ends, and its "
            "workers could not share it. Give a file: sqlite:///results/study.sqlite3."
        )
    if name == "sqlite" and (parsed.database.startswith("file:") or "uri" in parsed.query):
        raise UserError(
            f"Storage URL {redact(url)} uses an SQLite URI filename, which SQLAlchemy would create as a folder named "
            "'file:' in the working directory. Give a plain path: sqlite:///path/to/study.sqlite3."
        )
    return name


RESULTS_DIR = Path("results")
