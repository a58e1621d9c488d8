"""`python -m search.best --study NAME`: the best completed trials, ranked by final validation loss.

Only completed trials are ranked: a pruned trial stopped before the budget, so its loss was
measured after fewer examples and would not be a fair comparison. The table is for people;
`--format csv|json` gives the same columns (named as in the `search_trials` SQL view) to programs.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any, Callable

from search.errors import exits_on_user_error
from search.storage import STORAGE_ENV, redact
from search.trials import TrialRow, completed, locate, open_study, state_counts

# (column, header, format) for the table; csv and json use the column names and raw values.
_TABLE: list[tuple[str, str, Callable[[Any], str]]] = [
    ("rank", "rank", str),
    ("number", "trial", str),
    ("batch_size", "batch", str),
    ("lr", "lr", "{:.4g}".format),
    ("effective_lr", "effective_lr", "{:.4g}".format),
    ("momentum", "momentum", "{:.3f}".format),
    ("steps", "steps", "{:,}".format),
    ("examples_seen", "examples", "{:,}".format),
    ("final_val_loss", "val_loss", "{:.4f}".format),
    ("final_val_acc", "val_acc", "{:.4f}".format),
    ("wall_seconds", "duration", "{:.1f}s".format),
    ("state", "state", str),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m search.best", description=__doc__.split("\n")[0])
    parser.add_argument("--study", required=True, help="a study name from studies/, a study file, or a study name in the storage")
    parser.add_argument("--storage", help=f"database URL (default: ${STORAGE_ENV}, the study file, or results/<study>.sqlite3)")
    parser.add_argument("--top", type=int, default=10, help="how many trials to list (default 10)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    return parser.parse_args(argv)


def top_rows(study_name: str, url: str, top: int) -> tuple[list[dict[str, Any]], str]:
    """The `top` best completed trials as dicts (with their rank), and a line about the whole study."""
    study = open_study(study_name, url)
    ranked = completed(study)[: max(top, 0)]
    rows = [{"rank": rank, **TrialRow.of(trial).as_dict()} for rank, trial in enumerate(ranked, start=1)]
    trials = study.get_trials(deepcopy=False)
    return rows, f"study {study_name}  storage {redact(url)}  {len(trials)} trials: {state_counts(trials)}"


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [[header for _, header, _ in _TABLE]]
    cells += [["-" if row[key] is None else fmt(row[key]) for key, _, fmt in _TABLE] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_TABLE))]
    # Text columns left-aligned, numbers right-aligned.
    return "\n".join(
        "  ".join(cell.ljust(w) if key == "state" else cell.rjust(w) for cell, w, (key, _, _) in zip(line, widths, _TABLE)).rstrip()
        for line in cells
    )


def format_csv(rows: list[dict[str, Any]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["rank", *TrialRow.__dataclass_fields__], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().rstrip("\n")


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study_name, url = locate(args.study, args.storage)
    rows, about = top_rows(study_name, url, args.top)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        print(format_csv(rows))
    else:
        print(about)
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
