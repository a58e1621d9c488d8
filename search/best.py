"""`python -m search.best --study NAME`: the best completed trials, ranked by final validation loss.

Only completed trials are ranked: a pruned trial stopped before the budget, so its loss was
measured after fewer examples and would not be a fair comparison. The table is for people;
`--format csv|json` gives every column of the `search_trials` SQL view, by the same names, to programs.

`--frontier` (a `strategy: frontier` study): one row per batch size instead, the mean over its
paired seed re-runs with t-based 95% intervals (the `search_frontier` view), and the recommendation.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import textwrap
from typing import Any, Callable

from search.analysis.frontier import FrontierRow
from search.api import Study
from search.cli import command_parser
from search.errors import exits_on_user_error
from search.render.text import number_text
from search.store.trials import TrialRow
from search.store.urls import STORAGE_ENV

# (header, value, format) for the table; csv and json give every column of `TrialRow` and the rank.
_TABLE: list[tuple[str, Callable[[TrialRow], Any], Callable[[Any], str]]] = [
    ("trial", lambda row: row.number, str),
    ("batch", lambda row: row.batch_size, str),
    ("lr", lambda row: row.lr, "{:.4g}".format),
    ("effective_lr", lambda row: row.record.effective_lr, "{:.4g}".format),
    ("momentum", lambda row: row.momentum, "{:.3f}".format),
    ("steps", lambda row: row.record.steps, "{:,}".format),
    ("examples", lambda row: row.record.examples_seen, "{:,}".format),
    ("val_loss", lambda row: row.record.final_val_loss, "{:.4f}".format),
    ("val_acc", lambda row: row.record.final_val_acc, "{:.4f}".format),  # absent without a classification loss
    ("duration", lambda row: row.record.wall_seconds, "{:.1f}s".format),
    ("state", lambda row: row.state, str),
    ("weights", lambda row: row.record.checkpoint_path, str),  # kept final weights (checkpoints), "-" when none
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("best", __doc__, '--study cifar_bs --top 5', '--study smoke --storage sqlite:///results/smoke.sqlite3 --format csv > best.csv')
    parser.add_argument("--study", required=True, help="a study name from studies/, a study file, or a study name in the storage")
    parser.add_argument("--storage", help=f"database URL (default: ${STORAGE_ENV}, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--top", type=int, default=10, help="how many trials to list (default 10)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--frontier", action="store_true", help="a frontier study's frontier: one row per batch size over its seeds")
    return parser.parse_args(argv)


def ranked_dicts(rows: list[TrialRow]) -> list[dict[str, Any]]:
    """The rows as dicts of raw values, named as in the `search_trials` view, with their rank."""
    return [{"rank": rank, **row.as_dict()} for rank, row in enumerate(rows, start=1)]


def format_table(rows: list[TrialRow]) -> str:
    cells = [["rank", *(header for header, _, _ in _TABLE)]]
    cells += [[str(rank), *(number_text(value(row), fmt, "-") for _, value, fmt in _TABLE)] for rank, row in enumerate(rows, start=1)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    # Text columns (the state and the weights, last) left-aligned, numbers right-aligned.
    return "\n".join(
        "  ".join(cell.ljust(w) if i >= len(widths) - 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        for line in cells
    )


def format_csv(dicts: list[dict[str, Any]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(dicts[0]) if dicts else ["rank", *TrialRow.columns()], lineterminator="\n")
    writer.writeheader()
    writer.writerows(dicts)
    return text.getvalue().rstrip("\n")


_FRONTIER_TABLE: list[tuple[str, Callable[[FrontierRow], Any], Callable[[Any], str]]] = [
    ("batch", lambda row: row.batch_size, "{:,}".format),
    ("seeds", lambda row: row.n_seeds, str),
    ("val_loss", lambda row: row.val_loss_mean, "{:.4f}".format),
    ("± ci95", lambda row: row.val_loss_ci95, "{:.4f}".format),
    ("val_acc", lambda row: row.val_acc_mean, "{:.4f}".format),
    ("± ci95 ", lambda row: row.val_acc_ci95, "{:.4f}".format),
    ("lr", lambda row: row.lr, "{:.4g}".format),
    ("effective_lr", lambda row: row.effective_lr, "{:.4g}".format),
    ("momentum", lambda row: row.momentum, "{:.3f}".format),
    ("steps", lambda row: row.steps, "{:,}".format),
    ("ex/s", lambda row: row.examples_per_second, "{:,.0f}".format),
    ("searched", lambda row: row.search_trials, str),
]


def format_frontier(rows: list[FrontierRow]) -> str:
    cells = [[header for header, _, _ in _FRONTIER_TABLE]]
    cells += [[number_text(value(row), fmt, "-") for _, value, fmt in _FRONTIER_TABLE] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in cells)


def frontier_output(study: Study, output: str) -> str:
    report = study.frontier()
    rows = report.frontier
    if output == "json":
        return json.dumps([row.as_dict() for row in rows], indent=2)
    if output == "csv":
        return format_csv([row.as_dict() for row in rows])
    advice = report.recommendation
    return "\n".join([study.describe(), format_frontier(rows), *(textwrap.wrap(advice.reason, 110) if advice else report.frontier_claims[:1])])


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study = Study.open(args.study, args.storage)
    if args.frontier:
        print(frontier_output(study, args.format))
        return 0
    rows = study.best(args.top)
    if args.format == "json":
        print(json.dumps(ranked_dicts(rows), indent=2))
    elif args.format == "csv":
        print(format_csv(ranked_dicts(rows)))
    else:
        print(study.describe())
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
