"""`python -m search.dashboard --study NAME`: optuna-dashboard on the storage `search.run` used.

A thin wrapper: it resolves `--study`/`--storage` like every other command (so the default
SQLite file and $SEARCH_STORAGE just work), checks that the study is there, and serves the
storage it opened with optuna-dashboard. Without `--study` it serves whatever studies the
storage holds (docker-compose.yml starts it that way, before any worker has created one). It binds to 127.0.0.1 unless told otherwise: the
dashboard can rename and delete studies and has no authentication.

With `--study`, it also serves the study's artifact store (`search.store.artifacts`): the kept
weights of the best trials on their trials' pages, and the report's figures (`search.report`)
on the study's page, images previewed.
"""
from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

import optuna_dashboard
from optuna.artifacts import FileSystemArtifactStore

from search.cli import command_parser
from search.errors import UserError, exits_on_user_error
from search.store.artifacts import study_artifact_folder
from search.store.trials import EVALUATION_SUFFIX, connect, find, load, locate
from search.store.urls import STORAGE_ENV, redact


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("dashboard", __doc__, '--study cifar_bs', '--storage postgresql+psycopg2://user@db-host/search --port 8081')
    parser.add_argument("--study", help="a study name from studies/, a study file, or a study name in the storage")
    parser.add_argument("--storage", help=f"database URL (default: ${STORAGE_ENV}, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080)
    return parser.parse_args(argv)


def _check_listen(host: str, port: int) -> None:
    """Bind the address once before the server starts: a port in use or an unknown host is one paragraph, before any
    line saying the server listens."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise UserError(f"--host {host} is not an address of this machine ({error.strerror}): use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface).") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UserError(f"Port {port} on {host} is in use (another dashboard?): pick another --port.") from None
            raise UserError(f"The dashboard cannot listen on {host}:{port}: {error.strerror or error}. Use --host 127.0.0.1 or another --port.") from None


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a TCP port: use a number from 1 to 65535 (default 8080).")
    if args.study:
        study_name, url = locate(args.study, args.storage)
    else:
        url = args.storage or os.environ.get(STORAGE_ENV, "")
        if not url:
            raise UserError(f"Name the study (--study NAME) or the storage (--storage URL or ${STORAGE_ENV}) to show.")
    storage = connect(url)
    _check_listen(args.host, args.port)
    address = f"http://{'localhost' if args.host in ('127.0.0.1', 'localhost') else args.host}:{args.port}"
    print(f"optuna-dashboard on {redact(url)}: {address}/dashboard", flush=True)
    artifact_store = None
    if args.study:
        study = load(storage, study_name, url)
        folder = study_artifact_folder(study, url)
        if folder is not None and folder.is_dir():
            artifact_store = FileSystemArtifactStore(folder)
            print(f"  artifacts (kept weights, report figures): {folder}", flush=True)
        for shown in filter(None, (study, find(storage, study_name + EVALUATION_SUFFIX))):
            study_id = storage.get_study_id_from_name(shown.study_name)
            trials = len(shown.get_trials(deepcopy=False))
            print(f"  {shown.study_name} ({trials} trials): {address}/dashboard/studies/{study_id}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}; the dashboard has no login and can delete studies.", file=sys.stderr, flush=True)
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port, artifact_store=artifact_store)
    except OSError as error:
        raise UserError(f"The dashboard cannot listen on {args.host}:{args.port}: {error.strerror or error}. Pick another --port.") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
