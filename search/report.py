"""`python -m search.report --study NAME`: an HTML page that answers "what difference does batch size make?"

It renders (`search.render.page`) what `search.analysis` computes from the study's own trials (and
the test-set runs of `search.evaluate`, when there are any): PNG figures, their numbers as tables,
and a plain-language summary. The page is static (no scripts, no network), so it opens anywhere.

Its figures are also uploaded as study artifacts into the study's artifact store
(`search.store.artifacts`), each replacing its previous upload, so optuna-dashboard shows them on
the study's page next to Optuna's own plots (`python -m search.dashboard`).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import optuna

from search.analysis.speeds import TARGET_MARGIN
from search.analysis.study_report import analyze
from search.cli import command_parser
from search.errors import UserError, exits_on_user_error
from search.render.page import write_report
from search.store.artifacts import study_artifact_folder, upload_figures
from search.store.trials import EVALUATION_SUFFIX, connect, find, load, locate
from search.store.urls import STORAGE_ENV


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("report", __doc__, '--study cifar_bs --out results/cifar_bs_report')
    parser.add_argument("--study", required=True, help="a study name from studies/, a study file, or a study name in the storage")
    parser.add_argument("--storage", help=f"database URL (default: ${STORAGE_ENV}, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--out", type=Path, help="output folder (default: results/<study>-report)")
    parser.add_argument(
        "--target-loss", type=float,
        help=f"loss for the time-to-target comparison (default: the best loss + {TARGET_MARGIN:.0%}%)",
    )
    return parser.parse_args(argv)


def _check_out(out: Path) -> None:
    """The report's folder must be a folder we can create or write into."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--out {out} is (or lies under) a file, not a folder: give a folder for report.html and its figures.") from None
    except OSError as error:
        raise UserError(f"Cannot create the report folder {out}: {error.strerror}. Give a writable folder with --out.") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"The report folder {out} is not writable. Give a writable folder with --out.")


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study_name, url = locate(args.study, args.storage)
    storage = connect(url)
    study = load(storage, study_name, url)
    out = args.out or Path("results") / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', study_name)}-report"
    _check_out(out)
    report = analyze(study, find(storage, study_name + EVALUATION_SUFFIX), args.target_loss)
    page = write_report(report, study, url, out)
    print("\n".join(report.summary))
    print(f"report: {page.resolve()}")
    _upload_figures(study, url, out, page)
    return 0


def _upload_figures(study: optuna.Study, url: str, out: Path, page: Path) -> None:
    """The page's figures (its <img> files), as study artifacts for optuna-dashboard; a failure here is a note, not an error."""
    folder = study_artifact_folder(study, url)
    if folder is None:
        print("figures not uploaded to the dashboard: a PostgreSQL study has an artifact store only with checkpoints.dir "
              "(a folder every worker reaches) in its study file.", file=sys.stderr)
        return
    figures = [out / name for name in re.findall(r'<img src="([^"/]+\.png)"', page.read_text(encoding="utf-8"))]
    try:
        names = upload_figures(study, url, folder, figures)
    except (UserError, OSError) as error:
        print(f"figures not uploaded to the dashboard: {error}", file=sys.stderr)
        return
    print(f"dashboard: {len(names)} figures uploaded as artifacts of study '{study.study_name}' (store {folder})")


if __name__ == "__main__":
    sys.exit(main())
