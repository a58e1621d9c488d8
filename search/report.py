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
import sys
from pathlib import Path

from search.analysis.speeds import TARGET_MARGIN
from search.api import Study
from search.cli import command_parser
from search.errors import exits_on_user_error
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


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report, page = Study.open(args.study, args.storage).report(args.out, args.target_loss)
    print("\n".join(report.summary))
    print(f"report: {page.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
