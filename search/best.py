"""`python -m search.best --study NAME`: the best completed trials, ranked by final validation loss.

Only completed trials are ranked: a pruned trial stopped before the budget, so its loss was
measured after fewer examples and would not be a fair comparison. The table is for people;
`--format csv|json` gives every column of the `search_trials` SQL view, by the same names, to programs.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any, Callable

from search.cli import command_parser
from search.errors import exits_on_user_error
from search.render.text import number_text
from search.store.trials import TrialRow, completed, locate, open_study, state_counts
from search.store.urls import STORAGE_ENV, redact

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
    return parser.parse_args(argv)


def top_rows(study_name: str, url: str, top: int) -> tuple[list[TrialRow], str]:
    """The `top` best completed trials, best first, and a line about the whole study."""
    study = open_study(study_name, url)
    rows = [TrialRow.of(trial) for trial in completed(study)[: max(top, 0)]]
    trials = study.get_trials(deepcopy=False)
    return rows, f"study {study_name}  storage {redact(url)}  {len(trials)} trials: {state_counts(trials)}"


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


def format_csv(rows: list[TrialRow]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["rank", *TrialRow.columns()], lineterminator="\n")
    writer.writeheader()
    writer.writerows(ranked_dicts(rows))
    return text.getvalue().rstrip("\n")


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study_name, url = locate(args.study, args.storage)
    rows, about = top_rows(study_name, url, args.top)
    if args.format == "json":
        print(json.dumps(ranked_dicts(rows), indent=2))
    elif args.format == "csv":
        print(format_csv(rows))
    else:
        print(about)
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
